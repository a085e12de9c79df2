//! Sealing: how a share is turned into bytes that only this node can open.
//!
//! A sealed blob is bound (as AEAD associated data) to the node, the slot
//! (wallet and scheme, committee, ...) and the version it was written for, so
//! a blob moved to another wallet, node or version fails to open. The blob
//! names the key that sealed it so that keys can be rotated (the container
//! format is [`conclave_proto::sealed`]).

use crate::hsm::{DecryptFailure, HsmError, Token};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use conclave_proto::link::BlobSlot;
use conclave_proto::sealed::SealedBlob;
use conclave_proto::NodeId;
use cryptoki::object::ObjectHandle;
use rand_core::RngCore;
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

/// Why a blob could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The blob is not in a format this build reads.
    #[error("sealed blob is malformed or of an unknown format")]
    Format,
    /// The blob was sealed by a key this node does not have.
    #[error("sealed by key {0:?}, which this node does not hold")]
    UnknownKey(String),
    /// Authentication failed: tampered, or bound to another node, slot or version.
    #[error("sealed blob does not open: tampered, or sealed for another node, slot or version")]
    Open,
    /// The token failed (not: the blob did not authenticate).
    #[error("HSM: {0}")]
    Token(#[source] crate::hsm::HsmError),
    /// The seal key could not be loaded.
    #[error("seal key {path}: {source}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// What a blob is bound to: the node, where it is kept, and its version.
pub struct SealContext<'a> {
    node: &'a NodeId,
    path: String,
    version: u32,
}

/// Prefix of the paths of what the enclave keeps itself (not in the host's
/// store); no [`BlobSlot`] path starts with it.
const LOCAL_PREFIX: &str = "local/";

impl<'a> SealContext<'a> {
    /// A blob the host stores in `slot`.
    pub fn blob(node: &'a NodeId, slot: &BlobSlot, version: u32) -> Self {
        SealContext { node, path: slot.path(), version }
    }

    /// A blob found in the host's store under `path` (relative to its blob
    /// root), for re-sealing: it opens only if it was sealed for that path.
    pub fn stored(node: &'a NodeId, path: &str, version: u32) -> Self {
        SealContext { node, path: path.to_string(), version }
    }

    /// A secret the enclave keeps in its own state directory.
    pub fn local(node: &'a NodeId, name: &str) -> Self {
        SealContext { node, path: format!("{LOCAL_PREFIX}{name}"), version: 1 }
    }

    fn aad(&self) -> Vec<u8> {
        let mut out = b"conclave/seal/v1".to_vec();
        out.push(self.node.as_str().len() as u8);
        out.extend_from_slice(self.node.as_str().as_bytes());
        out.extend_from_slice(&(self.path.len() as u32).to_be_bytes());
        out.extend_from_slice(self.path.as_bytes());
        out.extend_from_slice(&self.version.to_be_bytes());
        out
    }
}

/// A sealing backend.
pub trait Sealer: Send + Sync {
    /// The key that seals new blobs, as named in them.
    fn key_id(&self) -> &str;
    /// Seals `plaintext` for `ctx`.
    fn seal(&self, ctx: &SealContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>, SealError>;
    /// Opens a blob sealed for `ctx`.
    fn open(&self, ctx: &SealContext<'_>, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError>;
}

fn encode(key_id: &str, nonce: &[u8], ciphertext: &[u8]) -> Vec<u8> {
    SealedBlob { key_id, nonce, ciphertext }.encode()
}

fn parse(blob: &[u8]) -> Result<SealedBlob<'_>, SealError> {
    SealedBlob::parse(blob).map_err(|_| SealError::Format)
}

/// The key id of a nitro seal key, from its wrapped form.
pub fn kms_key_id(wrapped: &[u8]) -> String {
    use sha2::Digest;
    format!("kms:{}", hex::encode(&sha2::Sha256::digest(wrapped)[..8]))
}

/// The key a blob names, without opening it.
pub fn key_id_of(blob: &[u8]) -> Result<&str, SealError> {
    parse(blob).map(|p| p.key_id)
}

/// XChaCha20-Poly1305 under a 32-byte key this process holds: in dev mode a
/// key kept in a file beside the node's state (INSECURE: whoever reads the
/// file opens every share; for local experiments and tests only), in nitro
/// mode the data key KMS released to this enclave image.
pub struct KeySealer {
    key_id: String,
    cipher: XChaCha20Poly1305,
}

const DEV_SEAL_FILE: &str = "seal.key";

impl KeySealer {
    /// Loads the dev seal key from `state_dir`, creating it on first use.
    pub fn load_or_create(state_dir: &Path) -> Result<KeySealer, SealError> {
        let path = state_dir.join(DEV_SEAL_FILE);
        let err = |source| SealError::Key { path: path.clone(), source };
        if !path.exists() {
            std::fs::create_dir_all(state_dir).map_err(err)?;
            let mut key = Zeroizing::new([0u8; 32]);
            rand_core::OsRng.fill_bytes(key.as_mut());
            write_private_file(&path, hex::encode(key.as_ref()).as_bytes()).map_err(err)?;
        }
        let text = Zeroizing::new(std::fs::read_to_string(&path).map_err(err)?);
        let mut key = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(text.trim(), key.as_mut()).map_err(|_| err(std::io::Error::new(std::io::ErrorKind::InvalidData, "expected 64 hex digits")))?;
        Ok(Self::from_key(&key))
    }

    /// A sealer for a given key (tests use this to open what a node stored).
    pub fn from_key(key: &[u8; 32]) -> KeySealer {
        use sha2::Digest;
        // The key id names the key without revealing it.
        let key_id = format!("dev:{}", hex::encode(&sha2::Sha256::digest(key)[..8]));
        KeySealer { key_id, cipher: XChaCha20Poly1305::new(key.into()) }
    }

    /// Nitro mode: seals under `key`, the data key KMS wrapped as `wrapped`
    /// (blobs name the wrapped key, which identifies the data key without
    /// revealing it).
    pub fn kms(key: &crate::kms::DataKey, wrapped: &[u8]) -> KeySealer {
        KeySealer { key_id: kms_key_id(wrapped), cipher: XChaCha20Poly1305::new(key.expose().into()) }
    }
}

impl Sealer for KeySealer {
    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn seal(&self, ctx: &SealContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; 24];
        rand_core::OsRng.fill_bytes(&mut nonce);
        let aad = ctx.aad();
        let ct = self.cipher.encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad: &aad }).map_err(|_| SealError::Open)?;
        Ok(encode(&self.key_id, &nonce, &ct))
    }

    fn open(&self, ctx: &SealContext<'_>, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let p = parse(sealed)?;
        if p.key_id != self.key_id {
            return Err(SealError::UnknownKey(p.key_id.to_string()));
        }
        let nonce: [u8; 24] = p.nonce.try_into().map_err(|_| SealError::Format)?;
        let aad = ctx.aad();
        self.cipher.decrypt(&XNonce::from(nonce), Payload { msg: p.ciphertext, aad: &aad }).map(Zeroizing::new).map_err(|_| SealError::Open)
    }
}

/// HSM mode: AES-256-GCM under a key that never leaves the PKCS#11 token.
/// New blobs are sealed under the configured key; a blob names the key that
/// sealed it, so blobs under an older key of the same token still open
/// until `conclave-enclave reseal` has moved them to the new one.
pub struct TokenSealer {
    token: Arc<Token>,
    key_id: String,
    key: ObjectHandle,
    /// Keys found by label, so that each is looked up once.
    known: Mutex<HashMap<String, ObjectHandle>>,
}

const TOKEN_KEY_PREFIX: &str = "hsm:";

impl TokenSealer {
    /// Seals under the token's key `label`, which must exist.
    pub fn new(token: Arc<Token>, label: &str) -> Result<TokenSealer, HsmError> {
        let key = token.seal_key(label)?.ok_or_else(|| HsmError::MissingKey { kind: "AES seal key", label: label.to_string() })?;
        let key_id = format!("{TOKEN_KEY_PREFIX}{label}");
        let known = Mutex::new(HashMap::from([(key_id.clone(), key)]));
        Ok(TokenSealer { token, key_id, key, known })
    }

    fn key_named(&self, key_id: &str) -> Result<ObjectHandle, SealError> {
        if let Some(key) = self.known.lock().expect("key cache lock").get(key_id) {
            return Ok(*key);
        }
        let label = key_id.strip_prefix(TOKEN_KEY_PREFIX).ok_or_else(|| SealError::UnknownKey(key_id.to_string()))?;
        let key = self.token.seal_key(label).map_err(SealError::Token)?.ok_or_else(|| SealError::UnknownKey(key_id.to_string()))?;
        self.known.lock().expect("key cache lock").insert(key_id.to_string(), key);
        Ok(key)
    }
}

impl Sealer for TokenSealer {
    fn key_id(&self) -> &str {
        &self.key_id
    }

    fn seal(&self, ctx: &SealContext<'_>, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        // Random 96-bit IVs: the number of seals under one key stays far
        // below the 2^32 that NIST SP 800-38D allows for random IVs.
        let mut iv = [0u8; 12];
        rand_core::OsRng.fill_bytes(&mut iv);
        let ct = self.token.encrypt_gcm(self.key, &iv, &ctx.aad(), plaintext).map_err(SealError::Token)?;
        Ok(encode(&self.key_id, &iv, &ct))
    }

    fn open(&self, ctx: &SealContext<'_>, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let p = parse(sealed)?;
        let key = self.key_named(p.key_id)?;
        let iv: [u8; 12] = p.nonce.try_into().map_err(|_| SealError::Format)?;
        self.token.decrypt_gcm(key, &iv, &ctx.aad(), p.ciphertext).map_err(|e| match e {
            DecryptFailure::Authentication => SealError::Open,
            DecryptFailure::Token(e) => SealError::Token(e),
        })
    }
}

/// Writes a file readable by its owner only, fully synced, or not at all.
pub(crate) fn write_private_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_proto::{Scheme, WalletId};

    fn slot(w: &str) -> BlobSlot {
        BlobSlot::Share { wallet: WalletId::new(w).unwrap(), scheme: Scheme::Ecdsa }
    }

    #[test]
    fn a_blob_opens_only_in_its_own_context() {
        let s = KeySealer::from_key(&[1; 32]);
        let node = NodeId::new("n1").unwrap();
        let (w1, w2) = (slot("w1"), slot("w2"));
        let ctx = SealContext::blob(&node, &w1, 1);
        let blob = s.seal(&ctx, b"share").unwrap();
        assert_eq!(&**s.open(&ctx, &blob).unwrap(), b"share");
        assert!(matches!(s.open(&SealContext::blob(&node, &w2, 1), &blob), Err(SealError::Open)));
        assert!(matches!(s.open(&SealContext::blob(&node, &w1, 2), &blob), Err(SealError::Open)));
        let other = NodeId::new("n2").unwrap();
        assert!(matches!(s.open(&SealContext::blob(&other, &w1, 1), &blob), Err(SealError::Open)));
        let mut tampered = blob.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(matches!(s.open(&ctx, &tampered), Err(SealError::Open)));
        assert!(matches!(KeySealer::from_key(&[2; 32]).open(&ctx, &blob), Err(SealError::UnknownKey(_))));
        assert!(matches!(s.open(&ctx, b"CSB1"), Err(SealError::Format)));
    }
}
