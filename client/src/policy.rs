//! `conclave policy`: show the policy each signer enforces, sign a policy
//! document as one admin, and submit a signed policy to every signer.

use crate::Failure;
use clap::{Args, Subcommand};
use conclave_client::governance::sign_policy;
use conclave_client::{config, Client};
use conclave_proto::govern::{Fact, GovernAsk};
use conclave_proto::policy::{AdminSignature, Policy, SignedPolicy};
use conclave_proto::PROTOCOL_VERSION;
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// The policy each signer enforces and its version, as each signer
    /// signed it over a fresh nonce.
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Sign a policy document as one admin; prints the signature (JSON),
    /// for `policy set --signature`. Admins on other machines each run
    /// this on the same file.
    Sign {
        /// The policy document (JSON), signed exactly as it is in the file.
        #[arg(long)]
        file: PathBuf,
        /// The admin's key file (as made by `conclave initiator new`).
        #[arg(long)]
        admin_key: PathBuf,
        /// Accepted for uniformity: the signature is printed as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Submit a policy to every signer, with admin signatures made here
    /// (`--admin-key`) or gathered from `policy sign` (`--signature`).
    Set(SetArgs),
}

#[derive(Args)]
pub struct SetArgs {
    /// The policy document (JSON).
    #[arg(long)]
    file: PathBuf,
    /// An admin's key file; repeat for each admin signing here.
    #[arg(long)]
    admin_key: Vec<PathBuf>,
    /// A file with one admin's signature from `policy sign`; repeat.
    #[arg(long)]
    signature: Vec<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

impl PolicyCommand {
    /// Whether output is JSON.
    pub fn json(&self) -> bool {
        match self {
            PolicyCommand::Show { json } => *json,
            PolicyCommand::Set(a) => a.json,
            PolicyCommand::Sign { .. } => true,
        }
    }
}

fn document(file: &Path) -> Result<String, Failure> {
    let text = std::fs::read_to_string(file).map_err(|e| Failure::Usage(format!("--file {}: {e}", file.display())))?;
    // Checked here too, so that an admin never signs what signers refuse.
    Policy::parse(&text).map_err(|e| Failure::Usage(format!("--file {}: {e}", file.display())))?;
    Ok(text)
}

/// Runs a `policy` command that needs no cluster.
pub fn sign(file: &Path, admin_key: &Path) -> Result<(), Failure> {
    let text = document(file)?;
    let key = config::read_key(admin_key)?;
    out!("{}", serde_json::to_string(&sign_policy(&text, &key)).expect("serialises"));
    Ok(())
}

/// Builds the signed policy of `policy set`.
pub fn signed(args: &SetArgs) -> Result<SignedPolicy, Failure> {
    let text = document(&args.file)?;
    let mut signatures = Vec::new();
    for path in &args.admin_key {
        signatures.push(sign_policy(&text, &config::read_key(path)?));
    }
    for path in &args.signature {
        let bytes = std::fs::read(path).map_err(|e| Failure::Usage(format!("--signature {}: {e}", path.display())))?;
        let s: AdminSignature = serde_json::from_slice(&bytes).map_err(|e| Failure::Usage(format!("--signature {}: {e}", path.display())))?;
        signatures.push(s);
    }
    if signatures.is_empty() {
        return Err(Failure::Usage("give --admin-key or --signature: a policy takes effect only when an admin quorum signed it".into()));
    }
    Ok(SignedPolicy { v: PROTOCOL_VERSION, document: text, signatures })
}

/// Asks every signer (`ask`) and prints what each said; fails if any
/// refused or could not be reached.
pub async fn report(client: &Client, ask: GovernAsk, json: bool) -> Result<(), Failure> {
    let answers = client.govern_all(ask).await;
    let mut failed = false;
    let mut rows = Vec::new();
    for (node, answer) in answers {
        match answer {
            Ok(Fact::Policy { admins, policy }) => {
                let parsed = policy.as_ref().and_then(|p| p.parse().ok());
                let version = parsed.as_ref().map_or(0, |p| p.version);
                if json {
                    rows.push(json!({"node": node, "version": version, "admins": admins, "policy": parsed}));
                } else {
                    let quorum = admins.map_or("no admin quorum".to_string(), |a| format!("admins {} of {}", a.threshold, a.keys.len()));
                    let rules = parsed.map_or("no policy".to_string(), |p| format!("version {version}, {} rules", p.rules.len()));
                    out!("{node:<12} {rules:<28} {quorum}");
                }
            }
            Ok(other) => {
                failed = true;
                eprintln!("conclave: {node}: answered a policy question with {other:?}");
            }
            Err(e) => {
                failed = true;
                let code = crate::error_code(&e);
                if json {
                    rows.push(json!({"node": node, "error": {"code": code, "reason": e.to_string()}}));
                } else {
                    eprintln!("conclave: {node}: {code}: {e}");
                }
            }
        }
    }
    if json {
        out!("{}", json!({"nodes": rows}));
    }
    match failed {
        true => Err(Failure::Refused),
        false => Ok(()),
    }
}
