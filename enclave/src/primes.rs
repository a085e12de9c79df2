//! The pool of pre-generated Paillier primes. Generating safe primes takes
//! seconds to minutes, so one set is always kept ready (sealed in the host's
//! store, so a restart does not regenerate it), and a replacement is
//! generated in the background as soon as one is taken.

use crate::ecdsa::Primes;
use crate::floor::FloorError;
use crate::seal::SealContext;
use crate::service::Enclave;
use conclave_proto::link::FromEnclave;
use conclave_proto::link::{BlobSlot, StoredBlob};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, Mutex};

/// One ready set of primes, and the machinery to replace it.
pub struct PrimePool {
    ready_tx: mpsc::Sender<Primes>,
    ready_rx: Mutex<mpsc::Receiver<Primes>>,
    stored_version: AtomicU32,
    ready: AtomicBool,
}

impl Default for PrimePool {
    fn default() -> Self {
        let (ready_tx, ready_rx) = mpsc::channel(1);
        PrimePool { ready_tx, ready_rx: Mutex::new(ready_rx), stored_version: AtomicU32::new(0), ready: AtomicBool::new(false) }
    }
}

impl PrimePool {
    /// Whether a set of primes is ready now.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn set_ready(enclave: &Enclave, ready: bool) {
        enclave.primes.ready.store(ready, Ordering::SeqCst);
        enclave.host.send(FromEnclave::Primes { ready });
    }

    /// Loads the sealed primes from the host's store, or starts generating.
    pub async fn start(enclave: &Arc<Enclave>) {
        let pool = &enclave.primes;
        let loaded = match enclave.host.load(BlobSlot::Primes).await {
            Ok(Some(blob)) => {
                // Primes this signer took already (the host served an old
                // pool) are never used again: a set serves one committee.
                let floor = enclave.floors.get(&BlobSlot::Primes.path()).unwrap_or(u32::MAX);
                pool.stored_version.store(blob.version.max(floor), Ordering::SeqCst);
                if blob.version < floor {
                    tracing::warn!(version = blob.version, floor, "the host served a used prime pool; generating");
                    None
                } else {
                    let ctx = SealContext::blob(enclave.keys.node_id(), &BlobSlot::Primes, blob.version);
                    enclave.sealer.open(&ctx, &blob.sealed).ok().and_then(|b| Primes::from_bytes(&b))
                }
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "cannot load the prime pool; generating");
                None
            }
        };
        match loaded {
            Some(primes) => {
                let _ = pool.ready_tx.try_send(primes);
                Self::set_ready(enclave, true);
            }
            None => Self::refill(enclave.clone()),
        }
    }

    /// Takes the ready primes (waiting only if none were ever generated) and
    /// starts generating the next. The pool's floor rises past the taken
    /// set's version first, so that no restart or old copy served by the
    /// host makes it serve a second committee.
    pub async fn take(enclave: &Arc<Enclave>) -> Result<Primes, FloorError> {
        let primes = enclave.primes.ready_rx.lock().await.recv().await.expect("the pool owns its sender");
        let taken = enclave.primes.stored_version.load(Ordering::SeqCst);
        let raised = enclave.floors.raise(&BlobSlot::Primes.path(), taken + 1);
        Self::set_ready(enclave, false);
        Self::refill(enclave.clone());
        raised.map(|()| primes)
    }

    fn refill(enclave: Arc<Enclave>) {
        tokio::spawn(async move {
            tracing::info!("generating Paillier primes in the background");
            let Ok(primes) = tokio::task::spawn_blocking(|| pregenerated().unwrap_or_else(Primes::generate)).await else {
                return;
            };
            let version = enclave.primes.stored_version.fetch_add(1, Ordering::SeqCst) + 1;
            let ctx = SealContext::blob(enclave.keys.node_id(), &BlobSlot::Primes, version);
            match enclave.sealer.seal(&ctx, &primes.to_bytes()) {
                Ok(sealed) => {
                    if let Err(e) = enclave.host.store(BlobSlot::Primes, StoredBlob { version, sealed }).await {
                        tracing::warn!(error = %e, "cannot persist primes; they stay in memory only");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot seal primes"),
            }
            tracing::info!("Paillier primes ready");
            let _ = enclave.primes.ready_tx.send(primes).await;
            Self::set_ready(&enclave, true);
        });
    }
}

/// A test signer's pregenerated set (the `PregeneratedPrimes` hook, only
/// in builds with `fault-injection`); `None` means generate.
fn pregenerated() -> Option<Primes> {
    use crate::fault::{armed, Hook, ENABLED};
    if !ENABLED {
        return None;
    }
    let value = armed(Hook::PregeneratedPrimes)?;
    let taken = value.rsplit_once('#').and_then(|(path, index)| {
        let index: usize = index.parse().ok()?;
        let sets: Vec<String> = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        Primes::from_bytes(sets.get(index)?.as_bytes())
    });
    if taken.is_none() {
        tracing::warn!(%value, "no usable pregenerated primes there; generating");
    }
    taken
}
