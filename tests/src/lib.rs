//! Shared test machinery: a real nats-server and real node processes
//! (`conclave-enclave` + `conclave-host` per node) on 127.0.0.1.
//!
//! Safe-prime generation and committee aux info cost minutes of CPU, so a
//! cluster is not built from nothing for every test. The first test of a run
//! boots a real cluster once, lets it generate primes and its committee's aux
//! info through the normal code paths, stops it, and keeps its node state
//! (identities, SoftHSM2 tokens or dev seal keys, sealed blobs) as a
//! template under `target/`, one per mode.
//! Every test then copies the template into its own directory and starts its
//! own nats-server and node processes on fresh ports.

pub mod adversary;
pub mod bip32;
pub mod cluster;
pub mod consul;
pub mod consul_standin;
pub mod faultproxy;
pub mod nats;
pub mod natsaccess;
pub mod pki;
pub mod primes;
pub mod process;
pub mod softhsm;
pub mod wire;

pub use cluster::Cluster;
pub use conclave_proto::link::Mode;
pub use nats::NatsServer;

use std::path::PathBuf;

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the workspace").to_path_buf()
}

/// Where cargo put the binaries (tests/run.sh builds them first): built
/// with the profile this program was, so that a benchmark run with
/// `--release` measures release nodes, as deployments run them.
pub fn bin(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| workspace().join("target"));
    let (profile, build) =
        if cfg!(debug_assertions) { ("debug", "cargo build --workspace --bins") } else { ("release", "cargo build --release --workspace --bins") };
    let path = target.join(profile).join(name);
    assert!(path.exists(), "{} is missing: build the workspace binaries first ({build}; tests/run.sh does)", path.display());
    path
}

/// A TCP port on 127.0.0.1 for a server a test starts, free until this
/// process ends. Taken below the kernel's ephemeral range, which outgoing
/// connections draw from (a port found by binding port 0 could be taken by
/// any connection before the server bound it: seen as a host's `Address
/// already in use`), and claimed by a lock file that this process holds,
/// so that no other test process takes it meanwhile.
pub fn free_port() -> u16 {
    static HELD: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    let ephemeral =
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok().and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok()).unwrap_or(32768);
    let (low, high) = (ephemeral.saturating_sub(12_000).max(1024), ephemeral);
    let locks = std::env::temp_dir().join("conclave-test-ports");
    std::fs::create_dir_all(&locks).expect("port lock directory");
    let start = rand_core::RngCore::next_u32(&mut rand_core::OsRng) as u16 % (high - low);
    for offset in 0..high - low {
        let port = low + (start + offset) % (high - low);
        let lock = std::fs::File::create(locks.join(format!("{port}.lock"))).expect("port lock file");
        if lock.try_lock().is_ok() && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            HELD.lock().expect("held ports").push(lock);
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 between {low} and {high}");
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_millis() as u64
}
