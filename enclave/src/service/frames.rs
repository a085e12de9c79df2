//! What the signer does with each frame from its host: start or abort an
//! attempt, answer attestation and blob checks, route peer envelopes, and
//! pass answers to the calls it made. The link only reads and writes frames.

use super::*;
use conclave_proto::link::ToEnclave;

impl Enclave {
    /// Acts on one frame from the host.
    pub fn on_frame(self: &Arc<Self>, frame: ToEnclave) {
        match frame {
            ToEnclave::Hello { .. } => {}
            ToEnclave::Start { request, plan, blobs } => {
                tokio::spawn(self.clone().start(request, plan, blobs));
            }
            ToEnclave::Presign { plan } => {
                tokio::spawn(self.clone().presign(plan));
            }
            ToEnclave::Abort { request_id, attempt, answered } => self.abort(&request_id, attempt, answered),
            ToEnclave::Attest { call, nonce } => {
                self.host.send(FromEnclave::Attested { call, result: self.attest(&nonce) });
            }
            ToEnclave::Govern { call, query } => {
                let enclave = self.clone();
                tokio::spawn(async move {
                    let result = enclave.govern(query).await;
                    enclave.host.send(FromEnclave::Governed { call, result });
                });
            }
            ToEnclave::Check { call, path, blob } => {
                // The wrapped seal key is KMS's ciphertext, not a sealed blob:
                // it checks out if it is the key this signer runs under.
                let error = if path == BlobSlot::SealKey.path() {
                    (crate::seal::kms_key_id(&blob.sealed) != self.sealer.key_id())
                        .then(|| RequestError::new(ErrorCode::Storage, "custody/seal-key is not the wrapped key this signer runs under"))
                } else if path == BlobSlot::Audit.path() {
                    // Signed, not sealed: this signer's own entries.
                    self.own_entry(&blob).err()
                } else if path == BlobSlot::Policy.path() {
                    self.stored_policy(&blob).err()
                } else {
                    let ctx = SealContext::stored(self.keys.node_id(), &path, blob.version);
                    self.sealer.open(&ctx, &blob.sealed).err().map(crate::share::storage)
                };
                self.host.send(FromEnclave::Checked { call, error });
            }
            ToEnclave::Deliver { envelope } => {
                let peer = envelope.header.sender.clone();
                match crate::session::open(self, &envelope) {
                    Ok(opened) => {
                        if let Err(reason) = self.router.deliver(opened) {
                            self.host.send(FromEnclave::Dropped { reason, peer });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(%peer, reason = %e.reason, "envelope refused");
                        self.host.send(FromEnclave::Rejected { code: e.code, reason: e.reason, peer: Some(peer) });
                    }
                }
            }
            frame @ (ToEnclave::Loaded { .. } | ToEnclave::Stored { .. } | ToEnclave::PeerAttested { .. } | ToEnclave::Credentials { .. }) => {
                if let Some(call) = crate::link::answer_to(&frame) {
                    self.host.answer(call, frame)
                }
            }
        }
    }
}
