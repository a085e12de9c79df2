//! `conclave-host`: the proxy daemon of a node.

use clap::{Parser, Subcommand};
use conclave_host::config::HostConfig;
use conclave_host::coordinator::Host;
use conclave_host::nats::Nats;
use conclave_host::registry::Registry;
use conclave_host::store::BlobStore;
use conclave_host::{http, link};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "conclave-host", about = "Conclave host proxy: enclave link <-> NATS, sealed blob store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Run {
        #[arg(long)]
        config: PathBuf,
    },
    /// Write the sealed blob store (ciphertext only) to a backup file.
    Backup {
        #[arg(long)]
        config: PathBuf,
        /// The backup file to create.
        #[arg(long)]
        out: PathBuf,
    },
    /// Restore a backup into the store, after this node's signer has opened
    /// every blob in it. Run with this node's host stopped and its signer
    /// running. Writes nothing unless all of it works.
    Restore {
        #[arg(long)]
        config: PathBuf,
        /// The backup file.
        #[arg(long)]
        from: PathBuf,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let outcome = match Cli::parse().command {
        Command::Run { config } => rt.block_on(run(config)),
        Command::Backup { config, out } => backup(config, out),
        Command::Restore { config, from } => rt.block_on(restore(config, from)),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conclave-host: {e}");
            ExitCode::from(2)
        }
    }
}

fn backup(config: PathBuf, out: PathBuf) -> Result<(), String> {
    let config = HostConfig::load(&config).map_err(|e| e.to_string())?;
    let store = BlobStore::open(&config.store_dir).map_err(|e| format!("blob store {}: {e}", config.store_dir.display()))?;
    let backup = conclave_host::backup::take(&store, &config.node_id).map_err(|e| e.to_string())?;
    // Never overwrite an existing file: it may be the only good backup.
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).open(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    std::io::Write::write_all(&mut file, &backup.encode()).and_then(|()| file.sync_all()).map_err(|e| format!("{}: {e}", out.display()))?;
    println!("backed up {} blob(s) of {} to {} (checksum {})", backup.blobs.len(), backup.node_id, out.display(), backup.checksum);
    Ok(())
}

async fn restore(config: PathBuf, from: PathBuf) -> Result<(), String> {
    let config = HostConfig::load(&config).map_err(|e| e.to_string())?;
    let store = BlobStore::open(&config.store_dir).map_err(|e| format!("blob store {}: {e}", config.store_dir.display()))?;
    let size = std::fs::metadata(&from).map_err(|e| format!("{}: {e}", from.display()))?.len();
    if size > conclave_proto::backup::MAX_BACKUP_BYTES as u64 {
        return Err(format!("{} is {size} bytes, over the {} a backup may have", from.display(), conclave_proto::backup::MAX_BACKUP_BYTES));
    }
    let bytes = std::fs::read(&from).map_err(|e| format!("{}: {e}", from.display()))?;
    let done = conclave_host::backup::restore(&config, &store, &bytes).await.map_err(|e| e.to_string())?;
    println!("restored {} blob(s); {} were already in the store", done.written, done.present);
    Ok(())
}

async fn run(config: PathBuf) -> Result<(), String> {
    let config = HostConfig::load(&config).map_err(|e| e.to_string())?;
    let store = BlobStore::open(&config.store_dir).map_err(|e| format!("blob store {}: {e}", config.store_dir.display()))?;
    // A NATS server that has just started may still be restoring JetStream.
    let mut attempt = 0;
    let nats = loop {
        match Nats::connect(&config).await {
            Ok(n) => break n,
            Err(e) if attempt < 30 => {
                attempt += 1;
                tracing::warn!(error = %e, attempt, "NATS not ready; retrying");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    };
    let registry = conclave_host::nats::retrying("open the registry", || Registry::open(&config.registry, &nats, config.ready_ttl, config.nats_replicas))
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!(backend = registry.backend(), "registry open");
    let host = Arc::new(Host::new(config, store, nats, registry));
    tokio::spawn(link::run(host.clone()));
    let view = host.clone();
    tokio::spawn(async move { view.view.run(&view.registry).await });
    // Listen before telling anyone we are ready.
    let envelopes = host.subscribe_envelopes().await.map_err(|e| format!("subscribe: {e}"))?;
    let presign_plans = host.subscribe_presign_plans().await.map_err(|e| format!("subscribe: {e}"))?;
    let requests = host.request_consumer().await.map_err(|e| e.to_string())?;
    let queries = host.subscribe_queries().await.map_err(|e| format!("subscribe: {e}"))?;
    let attestation = host.subscribe_attestation().await.map_err(|e| format!("subscribe: {e}"))?;
    let governance = host.subscribe_governance().await.map_err(|e| format!("subscribe: {e}"))?;
    let approvals = host.subscribe_approvals().await.map_err(|e| format!("subscribe: {e}"))?;
    host.nats.client.flush().await.map_err(|e| format!("nats: {e}"))?;
    tokio::spawn(host.clone().heartbeat());
    // These run for the life of the process; if one ends, the node is
    // broken and must stop rather than look healthy.
    let envelopes = tokio::spawn(host.clone().carry_envelopes(envelopes));
    let requests = tokio::spawn(host.clone().consume_requests(requests));
    let queries = tokio::spawn(host.clone().answer_queries(queries));
    let attestation = tokio::spawn(host.clone().answer_attestation(attestation));
    let governance = tokio::spawn(host.clone().answer_governance(governance));
    let approvals = tokio::spawn(host.clone().answer_approvals(approvals));
    let presign_plans = tokio::spawn(host.clone().carry_presign_plans(presign_plans));
    tokio::spawn(host.clone().keep_pools());
    tokio::spawn(host.clone().save_pools());
    let http = tokio::spawn(http::serve(host));
    tokio::select! {
        r = envelopes => Err(format!("envelope subscription ended: {r:?}")),
        r = requests => Err(format!("request consumer ended: {r:?}")),
        r = queries => Err(format!("query subscription ended: {r:?}")),
        r = attestation => Err(format!("attestation subscription ended: {r:?}")),
        r = governance => Err(format!("governance subscription ended: {r:?}")),
        r = approvals => Err(format!("approval subscription ended: {r:?}")),
        r = presign_plans => Err(format!("presignature plan subscription ended: {r:?}")),
        r = http => Err(format!("http server ended: {:?}", r.map(|r| r.map_err(|e| e.to_string())))),
    }
}
