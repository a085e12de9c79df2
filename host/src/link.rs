//! The host's end of the enclave link: connect (and reconnect, forever),
//! greet, then pass frames both ways.

use crate::coordinator::Host;
use conclave_proto::link::{self, FromEnclave, NodeIdentity, ToEnclave};
use conclave_proto::transport;
use conclave_proto::PROTOCOL_VERSION;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};

/// The current connection to the enclave, if any.
pub struct LinkHandle {
    tx: Mutex<Option<mpsc::UnboundedSender<ToEnclave>>>,
    identity: watch::Sender<Option<NodeIdentity>>,
    /// Whether the link is up, for those who act on a change at once.
    up: watch::Sender<bool>,
    /// Questions to the enclave (attestation, governance) waiting for its
    /// answer, by call number.
    asking: Mutex<std::collections::HashMap<u64, tokio::sync::oneshot::Sender<FromEnclave>>>,
    next_call: std::sync::atomic::AtomicU64,
}

/// The enclave's answer to an attestation request.
pub type AttestResult = Result<conclave_proto::attestation::Document, conclave_proto::RequestError>;
/// The enclave's answer to a governance question.
pub type GovernResult = Result<conclave_proto::govern::Said, conclave_proto::RequestError>;

impl Default for LinkHandle {
    fn default() -> Self {
        LinkHandle {
            tx: Mutex::new(None),
            identity: watch::channel(None).0,
            up: watch::channel(false).0,
            asking: Mutex::default(),
            next_call: Default::default(),
        }
    }
}

impl LinkHandle {
    /// Asks the enclave for an attestation document answering `nonce`;
    /// `None` if the link is down or the enclave does not answer in time.
    pub async fn attest(&self, nonce: Vec<u8>) -> Option<AttestResult> {
        match self.ask(|call| ToEnclave::Attest { call, nonce }).await? {
            FromEnclave::Attested { result, .. } => Some(result),
            _ => None,
        }
    }

    /// Relays a governance question to the enclave; `None` as for `attest`.
    pub async fn govern(&self, query: conclave_proto::govern::GovernQuery) -> Option<GovernResult> {
        match self.ask(|call| ToEnclave::Govern { call, query }).await? {
            FromEnclave::Governed { result, .. } => Some(result),
            _ => None,
        }
    }

    async fn ask(&self, make: impl FnOnce(u64) -> ToEnclave) -> Option<FromEnclave> {
        let call = self.next_call.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.asking.lock().expect("link lock").insert(call, tx);
        let answer = match self.send(make(call)) {
            true => tokio::time::timeout(Duration::from_secs(10), rx).await.ok().and_then(Result::ok),
            false => None,
        };
        self.asking.lock().expect("link lock").remove(&call);
        answer
    }

    /// The enclave answered question `call`.
    pub fn answered(&self, call: u64, answer: FromEnclave) {
        if let Some(tx) = self.asking.lock().expect("link lock").remove(&call) {
            let _ = tx.send(answer);
        }
    }

    /// Sends a frame to the enclave; false if the link is down.
    pub fn send(&self, frame: ToEnclave) -> bool {
        self.tx.lock().expect("link lock").as_ref().is_some_and(|tx| tx.send(frame).is_ok())
    }

    /// Whether the link is up.
    pub fn is_up(&self) -> bool {
        self.tx.lock().expect("link lock").is_some()
    }

    /// Follows the link going up and down.
    pub fn watch_up(&self) -> watch::Receiver<bool> {
        self.up.subscribe()
    }

    /// Waits for the enclave's identity (its first Hello).
    pub async fn identity(&self) -> NodeIdentity {
        let mut rx = self.identity.subscribe();
        loop {
            if let Some(id) = rx.borrow_and_update().clone() {
                return id;
            }
            let _ = rx.changed().await;
        }
    }
}

/// Keeps the link up for the life of the process.
pub async fn run(host: Arc<Host>) {
    loop {
        let stream = match transport::connect(&host.config.link).await {
            Ok(s) => s,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let (mut r, mut w) = tokio::io::split(stream);
        if w.write_all(&link::encode_frame(&ToEnclave::Hello { v: PROTOCOL_VERSION })).await.is_err() {
            continue;
        }
        // Before it introduces itself, a nitro enclave opens its custody
        // through this connection: its sealed keys from the store, and the
        // instance role's credentials for its own calls to KMS.
        let identity = loop {
            let answer = match link::read_frame(&mut r).await {
                Ok(Ok(FromEnclave::Hello { v, identity })) if v == PROTOCOL_VERSION => break Some(identity),
                Ok(Ok(FromEnclave::Load { call, slot, version })) => host.answer_load(call, &slot, version),
                Ok(Ok(FromEnclave::Store { call, slot, blob, replace })) => host.answer_store(call, &slot, &blob, replace),
                Ok(Ok(FromEnclave::Credentials { call })) => host.answer_credentials(call).await,
                other => {
                    tracing::error!(?other, "enclave did not answer Hello with a matching version");
                    break None;
                }
            };
            if w.write_all(&link::encode_frame(&answer)).await.is_err() {
                break None;
            }
        };
        let Some(identity) = identity else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        if identity.node_id != host.config.node_id {
            tracing::error!(enclave = %identity.node_id, "the enclave on the link is another node; not attaching");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let (tx, mut rx) = mpsc::unbounded_channel::<ToEnclave>();
        *host.link.tx.lock().expect("link lock") = Some(tx);
        host.link.identity.send_replace(Some(identity));
        host.metrics.link_up.store(true, Ordering::Relaxed);
        host.link.up.send_replace(true);
        tracing::info!("enclave link up");
        let writer = tokio::spawn(async move {
            while let Some(frame) = rx.recv().await {
                if w.write_all(&link::encode_frame(&frame)).await.is_err() {
                    break;
                }
            }
        });
        loop {
            match link::read_frame(&mut r).await {
                Ok(Ok(frame)) => host.clone().from_enclave(frame),
                Ok(Err(e)) => tracing::warn!(error = %e, "undecodable frame from the enclave"),
                Err(_) => break,
            }
        }
        writer.abort();
        *host.link.tx.lock().expect("link lock") = None;
        host.metrics.link_up.store(false, Ordering::Relaxed);
        host.link.up.send_replace(false);
        host.link_lost();
        tracing::warn!("enclave link down; reconnecting");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_proto::link::LinkAddr;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_unix_link_carries_bytes_both_ways_and_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let addr = LinkAddr::Unix(dir.path().join("link.sock"));
        std::fs::write(dir.path().join("link.sock"), b"stale").unwrap();
        let mut listener = transport::LinkListener::bind(&addr).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("link.sock")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let (mut host, mut enclave) = tokio::join!(async { transport::connect(&addr).await.unwrap() }, async { listener.accept().await.unwrap() });
        host.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        enclave.read_exact(&mut buf).await.unwrap();
        enclave.write_all(b"pong").await.unwrap();
        host.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
    }
}
