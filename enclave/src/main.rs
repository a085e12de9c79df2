//! `conclave-enclave`: the signer process.

use clap::{Parser, Subcommand};
use conclave_enclave::attestation::{NitroNsm, Nsm};
use conclave_enclave::config::EnclaveConfig;
use conclave_enclave::custody::{Custody, CustodyError, Missing};
use conclave_enclave::link;
use conclave_enclave::primes::PrimePool;
use conclave_enclave::reseal;
use conclave_enclave::service::Enclave;
use conclave_proto::link::Mode;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "conclave-enclave", about = "Conclave signer: holds shares, runs protocol rounds")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create this node's identity and seal key if absent (dev: files; hsm:
    /// keys generated inside the token); print the identity as JSON for the
    /// cluster roster.
    Init {
        #[arg(long)]
        config: PathBuf,
    },
    /// Serve the link.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Re-seal every blob in the host's store (and this node's sealed
    /// channel key) under the configured seal key. Safe to interrupt and to
    /// run again.
    Reseal {
        #[arg(long)]
        config: PathBuf,
        /// The host's `store_dir`.
        #[arg(long)]
        store: PathBuf,
    },
    /// Make a dev cluster's attestation CA (dev mode only: its key is in
    /// the clear): `--out` for every node's `dev_attestation_ca`, `--root`
    /// for the clients' `dev_attestation_root`. Never overwrites.
    DevCa {
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        root: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conclave-enclave: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Init { config } => {
            let config = EnclaveConfig::load(&config).map_err(|e| e.to_string())?;
            let custody = Custody::open(&config, Missing::Create).map_err(|e| e.to_string())?;
            println!("{}", serde_json::to_string(&custody.keys.identity()).expect("identity serialises"));
            Ok(())
        }
        Command::Reseal { config, store } => {
            let config = EnclaveConfig::load(&config).map_err(|e| e.to_string())?;
            let custody = Custody::open(&config, Missing::Refuse).map_err(|e| e.to_string())?;
            let report = reseal::reseal(custody.sealer.as_ref(), &config.node_id, &store, &config.state_dir).map_err(|e| e.to_string())?;
            println!("resealed {} blob(s) under {}; {} already were", report.resealed, custody.sealer.key_id(), report.current);
            Ok(())
        }
        Command::DevCa { out, root } => {
            let ca = conclave_attest::sim::DevCa::generate().map_err(|e| e.to_string())?;
            for (path, text) in [(&out, ca.to_file()), (&root, ca.root().to_pem())] {
                let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(|e| format!("{}: {e}", path.display()))?;
                std::io::Write::write_all(&mut file, text.as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            println!("dev attestation CA {} (root fingerprint {})", out.display(), ca.root().fingerprint_hex());
            Ok(())
        }
        Command::Run { config } => {
            let config = EnclaveConfig::load(&config).map_err(|e| e.to_string())?;
            match config.mode {
                Mode::Dev => tracing::warn!(
                    state_dir = %config.state_dir.display(),
                    "DEV MODE: shares are sealed with a key file on disk and identity keys are files. INSECURE: for experiments and tests only"
                ),
                Mode::Hsm => tracing::info!("shares are sealed and the identity key is held by the token"),
                Mode::Nitro => tracing::info!("shares and identity are sealed under a KMS data key released only to this enclave image"),
            }
            let roster = config.load_roster().map_err(|e| e.to_string())?;
            // A signer whose keys do not open never listens. Nitro's keys
            // open only through a host, so nitro listens first.
            let local = match config.mode {
                Mode::Nitro => None,
                Mode::Dev | Mode::Hsm => Some(Custody::open(&config, Missing::Refuse).map_err(|e| e.to_string())?),
            };
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| e.to_string())?;
            rt.block_on(async move {
                let mut listener = link::bind(&config.link).map_err(|e| e.to_string())?;
                let (custody, first) = match local {
                    Some(custody) => (custody, None),
                    // Nitro keeps its keys in the host's store, sealed under a
                    // KMS key the enclave asks for itself: custody opens
                    // through the first host to connect, which it then serves.
                    None => loop {
                        let nitro = config.nitro.as_ref().expect("config validation: nitro mode has a [nitro] section");
                        let nsm = Nsm::Nitro(NitroNsm::open(nitro).map_err(|e| e.to_string())?);
                        let mut host = link::accept(&mut listener, &config.link).await.map_err(|e| e.to_string())?;
                        match Custody::unlock_nitro(&config.node_id, nitro, nsm, &mut host).await {
                            Ok(custody) => break (custody, Some(host)),
                            Err(CustodyError::Host(e)) => tracing::warn!(error = %e, "the host went away while custody was opening; waiting for it"),
                            Err(e) => return Err(e.to_string()),
                        }
                    },
                };
                let enclave = Arc::new(Enclave::new(config, custody, roster).map_err(|e| e.to_string())?);
                let server = tokio::spawn(link::serve(enclave.clone(), listener, first));
                // The pool loads through the host, so it waits for one to attach.
                tokio::spawn(async move {
                    enclave.host.wait_attached().await;
                    PrimePool::start(&enclave).await;
                });
                server.await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())
            })
        }
    }
}
