//! `conclave attest verify`: checks a stored Nitro attestation document
//! for a compliance team; `conclave attest node`: asks a node for a fresh
//! one and also checks that it binds the identity the node uses in the
//! cluster. Both report what the document states and which check failed.

use clap::Args;
use conclave_attest::{AttestError, Claims, Document, Policy, TrustedRoot};
use conclave_client::{Client, ClientError};
use conclave_proto::NodeId;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Args)]
pub struct VerifyArgs {
    /// The attestation document (COSE_Sign1, as the NSM returns it).
    #[arg(long)]
    doc: PathBuf,
    /// Required measurement, e.g. 0=<96 hex digits>; repeat for more PCRs.
    #[arg(long = "pcr", value_name = "N=HEX", value_parser = parse_pcr)]
    pcrs: Vec<(u8, Vec<u8>)>,
    /// Required nonce (hex).
    #[arg(long, value_name = "HEX", value_parser = parse_hex)]
    nonce: Option<Hex>,
    /// Verify as of this UTC instant, e.g. 2022-10-13T09:00:00Z (default: now).
    #[arg(long, value_name = "RFC3339", value_parser = humantime::parse_rfc3339)]
    at: Option<SystemTime>,
    /// Trust this root certificate (PEM) instead of the AWS Nitro Enclaves root.
    #[arg(long, value_name = "PEM")]
    root: Option<PathBuf>,
    /// Accept an enclave running in debug mode (its host can read its memory).
    #[arg(long)]
    allow_debug: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Bytes given in hex (a newtype: clap would read `Option<Vec<u8>>` as a
/// list of numbers).
#[derive(Clone)]
struct Hex(Vec<u8>);

fn parse_hex(s: &str) -> Result<Hex, String> {
    hex::decode(s).map(Hex).map_err(|e| format!("not hex: {e}"))
}

fn parse_pcr(s: &str) -> Result<(u8, Vec<u8>), String> {
    let (index, value) = s.split_once('=').ok_or("expected N=HEX")?;
    let index = index.parse::<u8>().ok().filter(|i| *i < 32).ok_or_else(|| format!("PCR index {index:?} is not 0 to 31"))?;
    let Hex(value) = parse_hex(value)?;
    if ![32, 48, 64].contains(&value.len()) {
        return Err(format!("PCR{index} is {} bytes; measurements are 32, 48 or 64", value.len()));
    }
    Ok((index, value))
}

/// Verifies; `Ok(valid)`, or `Err` for a usage problem (unreadable input).
pub fn verify(args: VerifyArgs) -> Result<bool, String> {
    let bytes = std::fs::read(&args.doc).map_err(|e| format!("--doc {}: {e}", args.doc.display()))?;
    let (root, root_name) = match &args.root {
        Some(path) => {
            let pem = std::fs::read_to_string(path).map_err(|e| format!("--root {}: {e}", path.display()))?;
            let root = TrustedRoot::from_pem(&pem).map_err(|e| format!("--root {}: {e}", path.display()))?;
            (root, format!("given by --root {}", path.display()))
        }
        None => (TrustedRoot::aws_nitro(), "AWS Nitro Enclaves root".to_string()),
    };
    let mut pcrs = BTreeMap::new();
    for (index, value) in args.pcrs {
        if pcrs.insert(index, value).is_some() {
            return Err(format!("--pcr {index} is given twice"));
        }
    }
    let pcrs_checked: Vec<u8> = pcrs.keys().copied().collect();
    let at = args.at.unwrap_or_else(SystemTime::now);
    let policy = Policy { root, pcrs, nonce: args.nonce.map(|Hex(n)| n), at, allow_debug: args.allow_debug };

    // A document that parses states its claims even when a later check
    // fails: the report shows them, marked not valid.
    let (claims, outcome) = check(&bytes, &policy, |_| Ok(()));
    Ok(report(claims.as_ref(), &outcome, &policy, &pcrs_checked, &root_name, args.json, None))
}

/// Parses and verifies `bytes`, then applies `more` to a verified
/// document's claims.
fn check(bytes: &[u8], policy: &Policy, more: impl FnOnce(&Claims) -> Result<(), Failed>) -> (Option<Claims>, Result<(), Failed>) {
    // A document that parses states its claims even when a later check
    // fails: the report shows them, marked not valid.
    match Document::parse(bytes) {
        Ok(doc) => {
            let outcome = doc.verify(policy).map_err(Failed::from).and_then(|_| more(doc.claims()));
            (Some(doc.claims().clone()), outcome)
        }
        Err(e) => (None, Err(e.into())),
    }
}

/// Prints the report; returns whether every check passed.
fn report(
    claims: Option<&Claims>,
    outcome: &Result<(), Failed>,
    policy: &Policy,
    pcrs_checked: &[u8],
    root_name: &str,
    json: bool,
    node: Option<&NodeId>,
) -> bool {
    let report = Report { claims, outcome, policy, pcrs_checked, root_name };
    if json {
        let mut value = report.json();
        if let Some(node) = node {
            value["node"] = json!(node);
        }
        out!("{value}");
    } else {
        if let Some(node) = node {
            out!("node: {node}");
        }
        report.print();
    }
    outcome.is_ok()
}

#[derive(Args)]
pub struct NodeArgs {
    /// The node to ask.
    node: NodeId,
    /// Required measurement, e.g. 0=<96 hex digits>; repeat for more PCRs.
    #[arg(long = "pcr", value_name = "N=HEX", value_parser = parse_pcr)]
    pcrs: Vec<(u8, Vec<u8>)>,
    /// Accept a document from the dev cluster's simulated NSM, checked
    /// against `dev_attestation_root` of the client configuration. It
    /// proves nothing about the code a node runs.
    #[arg(long)]
    allow_dev: bool,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Asks `args.node` for a document answering a fresh nonce, verifies it,
/// and checks that it binds the identity the node is registered with.
/// `Ok(valid)`; `Err` when no document could be had.
pub async fn node(client: &Client, args: NodeArgs) -> Result<bool, ClientError> {
    let (root, root_name) = match (args.allow_dev, client.dev_attestation_root()) {
        (false, _) => (TrustedRoot::aws_nitro(), "AWS Nitro Enclaves root".to_string()),
        (true, Some(path)) => {
            let pem = std::fs::read_to_string(path).map_err(|e| ClientError::Config(format!("dev_attestation_root {}: {e}", path.display())))?;
            let root = TrustedRoot::from_pem(&pem).map_err(|e| ClientError::Config(format!("dev_attestation_root {}: {e}", path.display())))?;
            (root, format!("the dev cluster's simulated NSM (--allow-dev, {})", path.display()))
        }
        (true, None) => return Err(ClientError::Config("--allow-dev needs `dev_attestation_root` in the client configuration".into())),
    };
    let registered = client.nodes().await?;
    let identity = registered
        .into_iter()
        .find(|n| n.node_id == args.node)
        .map(|n| n.record.identity)
        .ok_or_else(|| ClientError::BadResult(format!("{} is not registered", args.node)))?;
    let mut nonce = vec![0u8; 32];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
    let document = client.attestation(&args.node, &nonce).await?;
    let pcrs: BTreeMap<u8, Vec<u8>> = args.pcrs.into_iter().collect();
    let pcrs_checked: Vec<u8> = pcrs.keys().copied().collect();
    let policy = Policy { root, pcrs, nonce: Some(nonce), at: SystemTime::now(), allow_debug: false };
    let binding = identity.attestation_binding();
    let (claims, outcome) = check(&document, &policy, |claims| match claims.user_data.as_deref() == Some(binding.as_slice()) {
        true => Ok(()),
        false => Err(Failed { check: "binding", reason: format!("the document does not bind the identity {} is registered with", args.node) }),
    });
    Ok(report(claims.as_ref(), &outcome, &policy, &pcrs_checked, &root_name, args.json, Some(&args.node)))
}

/// A failed check: its stable name and why.
struct Failed {
    check: &'static str,
    reason: String,
}

impl From<AttestError> for Failed {
    fn from(e: AttestError) -> Failed {
        Failed { check: e.check(), reason: e.to_string() }
    }
}

struct Report<'a> {
    claims: Option<&'a Claims>,
    outcome: &'a Result<(), Failed>,
    policy: &'a Policy,
    pcrs_checked: &'a [u8],
    root_name: &'a str,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + std::time::Duration::from_millis(ms)).to_string()
}

impl Report<'_> {
    fn json(&self) -> Value {
        let c = self.claims;
        let hex_opt = |f: fn(&Claims) -> &Option<Vec<u8>>| c.and_then(|c| f(c).as_deref().map(hex::encode));
        let mut value = json!({
            "valid": self.outcome.is_ok(),
            "module_id": c.map(|c| &c.module_id),
            "timestamp": c.map(|c| c.timestamp_ms),
            "digest": c.map(|c| &c.digest),
            "pcrs": c.map(|c| c.pcrs.iter().map(|(i, m)| (i.to_string(), hex::encode(m))).collect::<BTreeMap<_, _>>()),
            "nonce": hex_opt(|c| &c.nonce),
            "user_data": hex_opt(|c| &c.user_data),
            "public_key": hex_opt(|c| &c.public_key),
            "root_fingerprint": self.policy.root.fingerprint_hex(),
            "at": ms(self.policy.at),
            "pcrs_checked": self.pcrs_checked,
            "allow_debug": self.policy.allow_debug,
        });
        if let Err(e) = self.outcome {
            value["error"] = json!({"check": e.check, "reason": e.reason});
        }
        value
    }

    fn print(&self) {
        let mut lines: Vec<(String, String)> = vec![("valid".into(), if self.outcome.is_ok() { "yes".into() } else { "NO".into() })];
        if let Err(e) = self.outcome {
            lines.push(("failed check".into(), format!("{}: {}", e.check, e.reason)));
        }
        if let Some(c) = self.claims {
            let opt = |v: &Option<Vec<u8>>| v.as_deref().map_or("-".to_string(), hex::encode);
            lines.push(("module_id".into(), c.module_id.clone()));
            lines.push(("timestamp".into(), format!("{} ({})", c.timestamp_ms, rfc3339(c.timestamp_ms))));
            lines.push(("digest".into(), c.digest.clone()));
            lines.extend(c.pcrs.iter().map(|(i, m)| (format!("PCR{i}"), hex::encode(m))));
            lines.push(("nonce".into(), opt(&c.nonce)));
            lines.push(("user_data".into(), opt(&c.user_data)));
            lines.push(("public_key".into(), opt(&c.public_key)));
        }
        let checked = match self.pcrs_checked {
            [] => "none (any enclave image is accepted)".to_string(),
            some => some.iter().map(u8::to_string).collect::<Vec<_>>().join(", "),
        };
        lines.push(("pcrs checked".into(), checked));
        lines.push(("verified at".into(), rfc3339(ms(self.policy.at))));
        lines.push(("root".into(), format!("{} ({})", self.policy.root.fingerprint_hex(), self.root_name)));
        if self.policy.allow_debug {
            lines.push(("debug mode".into(), "allowed (--allow-debug)".into()));
        }
        let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in lines {
            out!("{k:>width$}: {v}");
        }
    }
}
