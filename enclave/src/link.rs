//! The enclave's end of the host link: a listener (Unix socket here; vsock
//! on Nitro), the frame loop, and calls the enclave makes to the host (load
//! and store sealed blobs). One host connection at a time; a new connection
//! replaces the old one, so a restarted host reattaches.

use crate::service::Enclave;
use conclave_proto::attestation::Document;
use conclave_proto::link::LinkAddr;
use conclave_proto::link::{self, BlobSlot, FromEnclave, StoreError, StoredBlob, ToEnclave};
use conclave_proto::transport::LinkListener;
use conclave_proto::transport::LinkStream;
use conclave_proto::NodeId;
use conclave_proto::{ErrorCode, RequestError, PROTOCOL_VERSION};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot};

/// How long a new connection has to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the enclave waits for the host to answer a load or store.
const HOST_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a call to the host failed.
#[derive(Debug, thiserror::Error)]
pub enum HostCallError {
    /// No host is connected, or it went away before answering.
    #[error("the host is not connected")]
    Disconnected,
    /// The host did not answer in time.
    #[error("the host did not answer within {0:?}")]
    Timeout(Duration),
    /// The host answered with something else than was asked.
    #[error("the host answered out of turn")]
    Confused,
    /// The host refused to store the blob.
    #[error("the host did not store the blob: {0}")]
    Refused(StoreError),
}

impl From<HostCallError> for RequestError {
    fn from(e: HostCallError) -> Self {
        RequestError::new(ErrorCode::Storage, e)
    }
}

/// Why the link stopped.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Binding or accepting failed.
    #[error("link {addr}: {source}")]
    Io {
        /// The address.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Frames to the host, and the enclave's outstanding calls to it.
#[derive(Default)]
pub struct HostLink {
    out: Mutex<Option<mpsc::UnboundedSender<FromEnclave>>>,
    attached: tokio::sync::Notify,
    next_call: AtomicU64,
    pending: Mutex<HashMap<u64, oneshot::Sender<ToEnclave>>>,
}

impl HostLink {
    /// Sends a frame to the current host; false if none is connected.
    pub fn send(&self, frame: FromEnclave) -> bool {
        match &*self.out.lock().expect("link lock") {
            Some(tx) => tx.send(frame).is_ok(),
            None => false,
        }
    }

    async fn call(&self, make: impl FnOnce(u64) -> FromEnclave) -> Result<ToEnclave, HostCallError> {
        let call = self.next_call.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().expect("pending lock").insert(call, tx);
        if !self.send(make(call)) {
            self.pending.lock().expect("pending lock").remove(&call);
            return Err(HostCallError::Disconnected);
        }
        let answer = tokio::time::timeout(HOST_CALL_TIMEOUT, rx).await;
        self.pending.lock().expect("pending lock").remove(&call);
        match answer {
            Ok(Ok(frame)) => Ok(frame),
            Ok(Err(_)) => Err(HostCallError::Disconnected),
            Err(_) => Err(HostCallError::Timeout(HOST_CALL_TIMEOUT)),
        }
    }

    /// The highest version stored in `slot`.
    pub async fn load(&self, slot: BlobSlot) -> Result<Option<StoredBlob>, HostCallError> {
        self.load_at(slot, None).await
    }

    /// Version `version` of `slot`, if the host has it (a blob of another
    /// version is none of it).
    pub async fn load_version(&self, slot: BlobSlot, version: u32) -> Result<Option<StoredBlob>, HostCallError> {
        Ok(self.load_at(slot, Some(version)).await?.filter(|b| b.version == version))
    }

    async fn load_at(&self, slot: BlobSlot, version: Option<u32>) -> Result<Option<StoredBlob>, HostCallError> {
        match self.call(|call| FromEnclave::Load { call, slot, version }).await? {
            ToEnclave::Loaded { blob, .. } => Ok(blob),
            _ => Err(HostCallError::Confused),
        }
    }

    /// Stores a new version in `slot`; the host never overwrites one.
    pub async fn store(&self, slot: BlobSlot, blob: StoredBlob) -> Result<(), HostCallError> {
        self.store_as(slot, blob, false).await
    }

    /// Stores `blob`, replacing the version if the host has it: for a
    /// version this signer never committed to.
    pub async fn replace(&self, slot: BlobSlot, blob: StoredBlob) -> Result<(), HostCallError> {
        self.store_as(slot, blob, true).await
    }

    /// Stores `blobs`, versions of `slot`, each replacing the version if
    /// the host has it (as [`HostLink::replace`]), in one call.
    pub async fn replace_all(&self, slot: BlobSlot, blobs: Vec<StoredBlob>) -> Result<(), HostCallError> {
        stored(self.call(|call| FromEnclave::ReplaceAll { call, slot, blobs }).await?)
    }

    async fn store_as(&self, slot: BlobSlot, blob: StoredBlob, replace: bool) -> Result<(), HostCallError> {
        stored(self.call(|call| FromEnclave::Store { call, slot, blob, replace }).await?)
    }

    /// Asks `peer`, through the hosts, for a document answering `nonce`.
    pub async fn peer_attestation(&self, peer: &NodeId, nonce: &[u8]) -> Result<Result<Document, RequestError>, HostCallError> {
        match self.call(|call| FromEnclave::AskAttestation { call, peer: peer.clone(), nonce: nonce.to_vec() }).await? {
            ToEnclave::PeerAttested { result, .. } => Ok(result),
            _ => Err(HostCallError::Confused),
        }
    }

    pub(crate) fn answer(&self, call: u64, frame: ToEnclave) {
        if let Some(tx) = self.pending.lock().expect("pending lock").remove(&call) {
            let _ = tx.send(frame);
        }
    }

    fn attach(&self, tx: mpsc::UnboundedSender<FromEnclave>) {
        *self.out.lock().expect("link lock") = Some(tx);
        // Calls made on the previous connection will never be answered.
        self.pending.lock().expect("pending lock").clear();
        self.attached.notify_waiters();
    }

    /// Waits until a host is attached.
    pub async fn wait_attached(&self) {
        loop {
            let notified = self.attached.notified();
            if self.out.lock().expect("link lock").is_some() {
                return;
            }
            notified.await;
        }
    }
}

/// A host connection that opened with a matching Hello, before the
/// enclave has introduced itself.
pub struct HostConnection {
    r: ReadHalf<LinkStream>,
    w: WriteHalf<LinkStream>,
    next_call: u64,
}

/// Listens on the configured link address.
pub fn bind(addr: &LinkAddr) -> Result<LinkListener, LinkError> {
    let listener = LinkListener::bind(addr).map_err(|source| LinkError::Io { addr: addr.to_string(), source })?;
    tracing::info!(link = %addr, "link listening");
    Ok(listener)
}

/// The next connection that opens with a matching Hello.
pub async fn accept(listener: &mut LinkListener, addr: &LinkAddr) -> Result<HostConnection, LinkError> {
    loop {
        let stream = listener.accept().await.map_err(|source| LinkError::Io { addr: addr.to_string(), source })?;
        let (mut r, w) = tokio::io::split(stream);
        // Bounded, so that a connection that says nothing does not keep the
        // next host out.
        match tokio::time::timeout(HELLO_TIMEOUT, link::read_frame(&mut r)).await {
            Ok(Ok(Ok(ToEnclave::Hello { v }))) if v == PROTOCOL_VERSION => return Ok(HostConnection { r, w, next_call: 0 }),
            Ok(other) => tracing::warn!(?other, "host did not open with a matching Hello; closing"),
            Err(_) => tracing::warn!("host said nothing within {HELLO_TIMEOUT:?}; closing"),
        }
    }
}

impl HostConnection {
    /// A call made before the enclave introduces itself (nitro mode's
    /// custody: its sealed keys and the credentials for KMS): one frame
    /// out, its answer back, on this connection.
    pub async fn call(&mut self, make: impl FnOnce(u64) -> FromEnclave) -> Result<ToEnclave, HostCallError> {
        let call = self.next_call;
        self.next_call += 1;
        self.w.write_all(&link::encode_frame(&make(call))).await.map_err(|_| HostCallError::Disconnected)?;
        match tokio::time::timeout(HOST_CALL_TIMEOUT, link::read_frame(&mut self.r)).await {
            Err(_) => Err(HostCallError::Timeout(HOST_CALL_TIMEOUT)),
            Ok(Err(_)) => Err(HostCallError::Disconnected),
            Ok(Ok(Ok(answer))) if answer_to(&answer) == Some(call) => Ok(answer),
            Ok(Ok(_)) => Err(HostCallError::Confused),
        }
    }

    /// The highest version stored in `slot`.
    pub async fn load(&mut self, slot: BlobSlot) -> Result<Option<StoredBlob>, HostCallError> {
        match self.call(|call| FromEnclave::Load { call, slot, version: None }).await? {
            ToEnclave::Loaded { blob, .. } => Ok(blob),
            _ => Err(HostCallError::Confused),
        }
    }

    /// Stores a new version in `slot`.
    pub async fn store(&mut self, slot: BlobSlot, blob: StoredBlob) -> Result<(), HostCallError> {
        stored(self.call(|call| FromEnclave::Store { call, slot, blob, replace: false }).await?)
    }
}

/// What the host's answer to a store says.
fn stored(answer: ToEnclave) -> Result<(), HostCallError> {
    match answer {
        ToEnclave::Stored { error: None, .. } => Ok(()),
        ToEnclave::Stored { error: Some(e), .. } => Err(HostCallError::Refused(e)),
        _ => Err(HostCallError::Confused),
    }
}

/// The call an answer frame answers.
pub(crate) fn answer_to(frame: &ToEnclave) -> Option<u64> {
    match frame {
        ToEnclave::Loaded { call, .. } | ToEnclave::Stored { call, .. } | ToEnclave::PeerAttested { call, .. } | ToEnclave::Credentials { call, .. } => {
            Some(*call)
        }
        _ => None,
    }
}

/// Serves hosts until the process ends: `first` (a connection already
/// accepted, in nitro mode the one custody was opened through), then
/// whoever connects; a new connection replaces the old one.
pub async fn serve(enclave: Arc<Enclave>, mut listener: LinkListener, first: Option<HostConnection>) -> Result<(), LinkError> {
    let mut next = first;
    let mut current: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let conn = match next.take() {
            Some(conn) => conn,
            None => accept(&mut listener, &enclave.config.link).await?,
        };
        // One host at a time: a new connection replaces the old one.
        if let Some(previous) = current.take() {
            previous.abort();
        }
        current = Some(tokio::spawn(connection(enclave.clone(), conn)));
    }
}

async fn connection(enclave: Arc<Enclave>, conn: HostConnection) {
    let HostConnection { mut r, mut w, .. } = conn;
    let (tx, mut rx) = mpsc::unbounded_channel::<FromEnclave>();
    let _ = tx.send(FromEnclave::Hello { v: PROTOCOL_VERSION, identity: enclave.keys.identity() });
    let _ = tx.send(FromEnclave::Primes { ready: enclave.primes.is_ready() });
    enclave.host.attach(tx);
    tracing::info!("host attached");
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if w.write_all(&link::encode_frame(&frame)).await.is_err() {
                break;
            }
        }
    });
    loop {
        let frame = match link::read_frame(&mut r).await {
            Ok(Ok(frame)) => frame,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "undecodable frame from host");
                enclave.host.send(FromEnclave::Rejected { code: e.code(), reason: e.to_string(), peer: None });
                continue;
            }
            Err(e) => {
                tracing::info!(error = %e, "host link closed");
                break;
            }
        };
        enclave.on_frame(frame);
    }
    writer.abort();
}
