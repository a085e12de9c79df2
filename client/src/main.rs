//! `conclave`: the command-line client.

use clap::{Args, Parser, Subcommand};
use conclave_client::{config, Client, ClientConfig, ClientError};
use conclave_proto::request::SignPayload;
use conclave_proto::{NodeId, RequestId, Scheme, WalletId};
use std::path::PathBuf;
use std::process::ExitCode;

/// `println!` that ends the process quietly when stdout is closed
/// (`conclave ... | head`) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::write_out(format_args!($($arg)*))
    };
}

mod approve;
mod attestation;
mod audit;
mod policy;

fn write_out(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(line).and_then(|()| stdout.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("conclave: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

#[derive(Parser)]
#[command(name = "conclave", about = "Client for Conclave threshold-signing clusters")]
struct Cli {
    /// Client configuration (default: $CONCLAVE_CONFIG, then ./.conclave/client.toml).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a threshold key for a wallet.
    Keygen {
        #[arg(long)]
        wallet: WalletId,
        #[arg(long)]
        scheme: Scheme,
        /// Signers needed (t of n).
        #[arg(long)]
        threshold: u16,
        /// Committee (default: every registered node).
        #[arg(long, value_delimiter = ',')]
        nodes: Option<Vec<NodeId>>,
        #[arg(long)]
        json: bool,
    },
    /// Move a wallet's key to a new committee or threshold, under the same
    /// public key (resharing); prints the wallet's new record. Several
    /// wallets (a committee's, when a node joins or leaves) are reshared one
    /// after the other; each is reported, and the exit status is non-zero
    /// if any failed.
    Reshare {
        /// The wallets to move.
        #[arg(long, value_delimiter = ',', required_unless_present = "committee", conflicts_with = "committee")]
        wallet: Vec<WalletId>,
        /// Or: every wallet of the scheme held by exactly this committee
        /// (the committee a node joins or leaves).
        #[arg(long, value_delimiter = ',')]
        committee: Option<Vec<NodeId>>,
        #[arg(long)]
        scheme: Scheme,
        /// Signers needed afterwards (t' of n').
        #[arg(long)]
        new_threshold: u16,
        /// The new committee.
        #[arg(long, value_delimiter = ',', required = true)]
        new_nodes: Vec<NodeId>,
        #[arg(long)]
        json: bool,
    },
    /// Sign with a wallet's key; the signature is verified before it is printed.
    Sign(SignArgs),
    /// Wallets' public records (deposit keys), each checked: signed by
    /// every member of the wallet's committee.
    Wallet {
        #[command(subcommand)]
        command: WalletCommand,
    },
    /// Show the nodes and their readiness.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Manage initiator keys.
    Initiator {
        #[command(subcommand)]
        command: InitiatorCommand,
    },
    /// Nitro attestation documents.
    Attest {
        #[command(subcommand)]
        command: AttestCommand,
    },
    /// Show a request that waits for approvals and approve it.
    Approve {
        /// The request (as `conclave sign --request-id` named it).
        #[arg(long)]
        request_id: RequestId,
        /// The approver's key file (as made by `conclave initiator new`).
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// The signers' audit trails: export, verify offline.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// Approval policies: show, sign (one admin), set (admin quorum).
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
}

#[derive(Subcommand)]
enum WalletCommand {
    /// One wallet's public key, xpub, version, threshold and committee.
    Show {
        #[arg(long)]
        wallet: WalletId,
        #[arg(long)]
        scheme: Scheme,
        #[arg(long)]
        json: bool,
    },
    /// Every wallet (of a scheme); a record its committee did not sign is
    /// named on stderr and makes the exit status non-zero.
    List {
        #[arg(long)]
        scheme: Option<Scheme>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum AttestCommand {
    /// Verify a document: signature, certificate chain to the AWS root,
    /// validity, debug mode, and the given PCRs and nonce. Exits 0 only if
    /// every check passes, 1 if one fails, 2 on a usage error.
    Verify(attestation::VerifyArgs),
    /// Ask a node for a fresh document, verify it, and check that it binds
    /// the identity the node uses in the cluster.
    Node(attestation::NodeArgs),
}

#[derive(Args)]
struct SignArgs {
    #[arg(long)]
    wallet: WalletId,
    #[arg(long)]
    scheme: Scheme,
    /// A 32-byte digest, signed as is.
    #[arg(long, conflicts_with_all = ["message_hex", "eth_tx_hex"], required_unless_present_any = ["message_hex", "eth_tx_hex"])]
    digest_hex: Option<String>,
    /// A message: SHA-256 hashed for ECDSA, signed as is for EdDSA.
    #[arg(long, conflicts_with = "eth_tx_hex")]
    message_hex: Option<String>,
    /// An unsigned Ethereum EIP-1559 transaction (0x02 || rlp), ECDSA: the
    /// signers decode it for their policy and hash it with Keccak-256;
    /// `recovery_id` is its y-parity.
    #[arg(long)]
    eth_tx_hex: Option<String>,
    /// Non-hardened derivation path, e.g. m/0/7 (ECDSA).
    #[arg(long)]
    path: Option<String>,
    /// Exactly these committee members sign.
    #[arg(long, value_delimiter = ',')]
    signers: Option<Vec<NodeId>>,
    /// The request's id (default: a random one), e.g. to tell approvers.
    #[arg(long)]
    request_id: Option<RequestId>,
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum InitiatorCommand {
    /// Create a new initiator key file and print its public key (hex).
    New {
        #[arg(long)]
        out: PathBuf,
    },
}

pub(crate) enum Failure {
    Usage(String),
    Client(ClientError),
    /// A check failed and the report says which; nothing more to print.
    Refused,
}

/// Prints a wallet's record (checked by the caller).
fn print_record(json: bool, k: &conclave_proto::result::KeygenResult) {
    let mut human = vec![("wallet", k.wallet.to_string()), ("scheme", k.scheme.to_string()), ("public_key", hex::encode(&k.public_key))];
    if let Some(x) = &k.xpub {
        human.push(("xpub", x.clone()));
    }
    human.push(("version", k.version.to_string()));
    human.push(("threshold", format!("{} of {}", k.threshold, k.committee.len())));
    human.push(("committee", k.committee.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",")));
    human.push(("verified", "signed by every committee member".into()));
    print(json, serde_json::to_value(k).expect("serialises"), &human);
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Config(m) => Failure::Usage(m),
            other => Failure::Client(other),
        }
    }
}

pub(crate) fn print(json: bool, value: serde_json::Value, human: &[(&str, String)]) {
    if json {
        out!("{value}");
    } else {
        let width = human.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (k, v) in human {
            out!("{k:>width$}: {v}");
        }
    }
}

fn hex_arg(name: &str, s: &str) -> Result<Vec<u8>, Failure> {
    hex::decode(s).map_err(|_| Failure::Usage(format!("--{name} is not hex")))
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Attest { command: AttestCommand::Verify(args) } => match attestation::verify(args).map_err(Failure::Usage)? {
            true => Ok(()),
            false => Err(Failure::Refused),
        },
        Command::Attest { command: AttestCommand::Node(args) } => {
            let client = Client::connect(ClientConfig::discover(cli.config.as_deref())?).await?;
            match attestation::node(&client, args).await? {
                true => Ok(()),
                false => Err(Failure::Refused),
            }
        }
        Command::Audit { command: audit::AuditCommand::Export { out, json } } => {
            let client = Client::connect(ClientConfig::discover(cli.config.as_deref())?).await?;
            audit::export(&client, &out, json).await
        }
        Command::Audit { command: audit::AuditCommand::Verify { file, roster, json } } => {
            // Offline: only the pinned roster is read.
            let roster = match roster {
                Some(path) => conclave_client::Roster::load(&path)?,
                None => ClientConfig::discover(cli.config.as_deref())?.roster,
            };
            audit::verify(&roster, &file, json)
        }
        Command::Approve { request_id, key, json } => {
            let client = Client::connect(ClientConfig::discover(cli.config.as_deref())?).await?;
            approve::approve(&client, &request_id, &key, json).await
        }
        Command::Policy { command: policy::PolicyCommand::Sign { file, admin_key, .. } } => policy::sign(&file, &admin_key),
        Command::Policy { command: policy::PolicyCommand::Show { json } } => {
            let client = Client::connect(ClientConfig::discover(cli.config.as_deref())?).await?;
            policy::report(&client, conclave_proto::govern::GovernAsk::Policy, json).await
        }
        Command::Policy { command: policy::PolicyCommand::Set(args) } => {
            let signed = policy::signed(&args)?;
            let client = Client::connect(ClientConfig::discover(cli.config.as_deref())?).await?;
            policy::report(&client, conclave_proto::govern::GovernAsk::SetPolicy { policy: signed }, args.json).await
        }
        Command::Initiator { command: InitiatorCommand::New { out } } => {
            let public = config::new_key(&out)?;
            out!("{}", hex::encode(public.to_bytes()));
            Ok(())
        }
        Command::Keygen { wallet, scheme, threshold, nodes, json } => {
            let client = Client::connect(ClientConfig::discover(cli.config.as_deref())?).await?;
            let k = client.keygen(&wallet, scheme, threshold, nodes).await?;
            print_record(json, &k);
            Ok(())
        }
        Command::Reshare { wallet, committee, scheme, new_threshold, new_nodes, json } => {
            let client = Client::connect(ClientConfig::discover(cli.config.as_deref())?).await?;
            let wallet: Vec<WalletId> = match committee {
                Some(committee) => client.wallets_of(scheme, committee).await?.into_iter().map(|r| r.wallet).collect(),
                None => wallet,
            };
            if wallet.is_empty() {
                eprintln!("conclave: no {scheme} wallet is held by exactly that committee; nothing to reshare");
            }
            let mut failed = None;
            for w in &wallet {
                match client.reshare(w, scheme, new_threshold, new_nodes.clone()).await {
                    Ok(k) => print_record(json, &k),
                    // The others still move; the first failure decides the exit.
                    Err(e) if wallet.len() > 1 => {
                        eprintln!("conclave: {w}: {e}");
                        failed.get_or_insert(e);
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            match failed {
                Some(e) => Err(e.into()),
                None => Ok(()),
            }
        }
        Command::Sign(a) => {
            let payload = match (&a.digest_hex, &a.message_hex, &a.eth_tx_hex) {
                (Some(d), _, _) => {
                    let d = hex_arg("digest-hex", d)?;
                    if a.scheme == Scheme::Ecdsa && d.len() != 32 {
                        return Err(Failure::Usage(format!("--digest-hex is {} bytes; an ECDSA digest is 32", d.len())));
                    }
                    SignPayload::Digest(d)
                }
                (None, Some(m), _) => SignPayload::Message(hex_arg("message-hex", m)?),
                (None, None, Some(tx)) => {
                    let tx = hex_arg("eth-tx-hex", tx.strip_prefix("0x").unwrap_or(tx))?;
                    conclave_proto::eth::decode_unsigned(&tx).map_err(|e| Failure::Usage(format!("--eth-tx-hex: {e}")))?;
                    SignPayload::EthEip1559(tx)
                }
                (None, None, None) => return Err(Failure::Usage("give --digest-hex, --message-hex or --eth-tx-hex".into())),
            };
            let eth = matches!(payload, SignPayload::EthEip1559(_));
            let path = match &a.path {
                Some(p) => conclave_proto::request::parse_path(p).map_err(Failure::Usage)?,
                None => Vec::new(),
            };
            let mut client = Client::connect(ClientConfig::discover(cli.config.as_deref())?).await?;
            client.on_pending(|id, e| match &e.approvals {
                Some(s) => eprintln!(
                    "conclave: request {id} waits for approvals: {} of {} from group {} (rule {}); approve with `conclave approve --request-id {id} --key FILE`",
                    s.approved.len(),
                    s.required,
                    s.group,
                    s.rule
                ),
                None => eprintln!("conclave: request {id} waits for approvals: {}", e.reason),
            });
            let request_id = a.request_id.clone().unwrap_or_else(conclave_client::client::new_request_id);
            let s = client.sign_as(request_id, &a.wallet, a.scheme, payload, path, a.signers).await?;
            let path_text = std::iter::once("m".to_string()).chain(s.path.iter().map(u32::to_string)).collect::<Vec<_>>().join("/");
            let signers = s.signers.iter().map(NodeId::to_string).collect::<Vec<_>>().join(",");
            let mut value = serde_json::to_value(&s).expect("serialises");
            value["path"] = serde_json::Value::String(path_text.clone());
            let mut human = vec![("signature", hex::encode(&s.signature))];
            if let Some(r) = s.recovery_id {
                human.push((if eth { "y_parity" } else { "recovery_id" }, r.to_string()));
            }
            human.extend([("public_key", hex::encode(&s.public_key)), ("path", path_text), ("signers", signers), ("verified", "yes".into())]);
            print(a.json, value, &human);
            Ok(())
        }
        Command::Wallet { command: WalletCommand::Show { wallet, scheme, json } } => {
            let client = Client::connect(ClientConfig::discover(cli.config.as_deref())?).await?;
            match client.wallet(&wallet, scheme).await? {
                Some(k) => {
                    print_record(json, &k);
                    Ok(())
                }
                None => Err(Failure::Client(ClientError::Request(conclave_proto::RequestError::new(
                    conclave_proto::ErrorCode::UnknownWallet,
                    format!("no {scheme} key for wallet {wallet}"),
                )))),
            }
        }
        Command::Wallet { command: WalletCommand::List { scheme, json } } => {
            let client = Client::connect(ClientConfig::discover(cli.config.as_deref())?).await?;
            let listing = client.wallets(scheme, None).await?;
            if json {
                let refused: Vec<serde_json::Value> = listing
                    .refused
                    .iter()
                    .map(|(wallet, e)| serde_json::json!({"wallet": wallet, "error": {"code": error_code(e), "reason": e.to_string()}}))
                    .collect();
                out!("{}", serde_json::json!({"wallets": listing.records, "refused": refused}));
            } else {
                for k in &listing.records {
                    let key = k.xpub.clone().unwrap_or_else(|| hex::encode(&k.public_key));
                    out!("{:<24} {:<5} v{:<3} {} of {:<3} {key}", k.wallet, k.scheme, k.version, k.threshold, k.committee.len());
                }
            }
            // Named on stderr either way: never use these.
            for (wallet, e) in &listing.refused {
                eprintln!("conclave: {wallet}: {}: {e}", error_code(e));
            }
            match listing.refused.is_empty() {
                true => Ok(()),
                false => Err(Failure::Refused),
            }
        }
        Command::Status { json } => {
            let client = Client::connect(ClientConfig::discover(cli.config.as_deref())?).await?;
            let st = client.status().await?;
            if json {
                out!("{}", serde_json::to_string(&st).expect("serialises"));
            } else {
                out!("{} of {} nodes ready", st.ready, st.total);
                for n in &st.nodes {
                    let primes = if n.primes_ready { "" } else { "  (generating Paillier primes)" };
                    out!("  {:<12} {:<9} {:<5} {}{primes}", n.id, if n.ready { "ready" } else { "not ready" }, n.mode, n.http);
                    for (peer, pcr0) in &n.attested_by {
                        out!("  {:<12} PCR0 {pcr0} verified by {peer}", "");
                    }
                    for (pool, level) in &n.presign_pools {
                        out!("  {:<12} presignatures {pool}: {level}", "");
                    }
                }
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = match &cli.command {
        Command::Keygen { json, .. } | Command::Reshare { json, .. } | Command::Status { json } => *json,
        Command::Wallet { command: WalletCommand::Show { json, .. } | WalletCommand::List { json, .. } } => *json,
        Command::Sign(a) => a.json,
        Command::Initiator { .. } => false,
        Command::Policy { command } => command.json(),
        Command::Approve { json, .. } => *json,
        Command::Audit { command } => command.json(),
        Command::Attest { command: AttestCommand::Verify(a) } => a.json,
        Command::Attest { command: AttestCommand::Node(a) } => a.json,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(m)) => {
            eprintln!("conclave: {m}");
            ExitCode::from(2)
        }
        Err(Failure::Refused) => ExitCode::from(1),
        Err(Failure::Client(e)) => {
            let code = error_code(&e);
            if json {
                let mut error = serde_json::json!({"code": code, "reason": e.to_string()});
                if let ClientError::Request(r) = &e {
                    if let Some(rule) = &r.rule {
                        error["rule"] = rule.as_str().into();
                    }
                    if let Some(approvals) = &r.approvals {
                        error["approvals"] = serde_json::to_value(approvals).expect("serialises");
                    }
                }
                out!("{}", serde_json::json!({ "error": error }));
            } else {
                eprintln!("conclave: {code}: {e}");
            }
            ExitCode::from(1)
        }
    }
}

/// The code a failure is reported under (`--json` and stderr).
pub(crate) fn error_code(e: &ClientError) -> &'static str {
    e.code().map(|c| c.as_str()).unwrap_or(match e {
        ClientError::Timeout { .. } => "timeout",
        ClientError::BadSignature(_) => "bad_signature",
        ClientError::Unauthenticated(_) => "unauthenticated_result",
        ClientError::Nats(_) => "unavailable",
        _ => "client_error",
    })
}
