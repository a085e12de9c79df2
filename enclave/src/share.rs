//! A wallet's share as sealed at rest: the public facts about the key and the
//! scheme-specific secret share, together, so that the committee and
//! threshold a share is used with come from sealed data, not from the host.

use crate::seal::{SealContext, SealError, Sealer};
use conclave_proto::link::{BlobSlot, StoredBlob};
use conclave_proto::result::KeygenResult;
use conclave_proto::{ErrorCode, NodeId, RequestError};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// A serialised secret share. Cannot be printed; zeroized on drop.
#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct SecretShare(#[serde(with = "conclave_proto::codec::b64")] Vec<u8>);

impl SecretShare {
    /// Wraps serialised share bytes.
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        SecretShare(bytes.to_vec())
    }

    /// The serialised share.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

/// What is sealed in a wallet's share slot.
#[derive(Serialize, Deserialize)]
pub struct ShareRecord {
    /// Public facts: key, committee, threshold, version.
    pub public: KeygenResult,
    /// The secret share, scheme-specific encoding.
    pub secret: SecretShare,
}

impl ShareRecord {
    /// Seals the record for `slot` at `public.version`.
    pub fn seal(&self, sealer: &dyn Sealer, node: &NodeId, slot: &BlobSlot) -> Result<StoredBlob, RequestError> {
        let plaintext = Zeroizing::new(serde_json::to_vec(self).expect("share records serialise"));
        let version = self.public.version;
        let sealed = sealer.seal(&SealContext::blob(node, slot, version), &plaintext).map_err(storage)?;
        Ok(StoredBlob { version, sealed })
    }

    /// Opens a stored blob of `slot`. The version the host claims is bound
    /// into the seal, and must agree with the sealed record.
    pub fn open(sealer: &dyn Sealer, node: &NodeId, slot: &BlobSlot, blob: &StoredBlob) -> Result<ShareRecord, RequestError> {
        let plaintext = sealer.open(&SealContext::blob(node, slot, blob.version), &blob.sealed).map_err(storage)?;
        let record: ShareRecord =
            serde_json::from_slice(&plaintext).map_err(|_| RequestError::new(ErrorCode::Storage, "sealed share record does not decode"))?;
        if record.public.version != blob.version {
            return Err(RequestError::new(ErrorCode::Storage, "sealed share record is of another version"));
        }
        Ok(record)
    }
}

/// Maps a sealing failure to the wire error.
pub fn storage(e: SealError) -> RequestError {
    RequestError::new(ErrorCode::Storage, e)
}
