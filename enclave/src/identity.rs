//! The node's long-term identity: an Ed25519 key that signs its broadcasts
//! and an X25519 key that peers encrypt to. Neither leaves the enclave.
//! In hsm mode the Ed25519 key signs only a certificate of a run key that
//! signs everything else ([`conclave_proto::run_key`] says why).
//!
//! Dev mode keeps both in a file; nitro mode keeps them sealed under its
//! KMS data key in the host's store (an enclave has no disk). HSM mode keeps the Ed25519 key in the
//! token (CKM_EDDSA) and the X25519 key sealed by the token's seal key:
//! SoftHSM2's CKM_ECDH1_DERIVE has no X25519 and accepts only CKD_NULL, and
//! the channel needs the raw shared secret in its own KDF, so the channel
//! key must be usable in this process. Sealing it under the token's key keeps it
//! unreadable outside the signer; the identity key in the token certifies
//! it through the roster. SECURITY.md has the reasoning.

use crate::channel::PairKeys;
use crate::hsm::{HsmError, Token};
use crate::seal::{SealContext, SealError, Sealer};
use conclave_proto::link::{Mode, NodeIdentity};
use conclave_proto::run_key::{NodeSignature, RunKey, RUN_KEY_LIFETIME_MS};
use conclave_proto::NodeId;
use ed25519_dalek::{Signer as _, SigningKey};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// A peer's channel public key (X25519).
pub type KxPublic = x25519_dalek::PublicKey;
type KxSecret = x25519_dalek::StaticSecret;
/// Channel keys with a peer, and the peer's channel key they are for.
type DerivedFor = ([u8; 32], Arc<PairKeys>);

/// Why the identity could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading or writing the key file failed.
    #[error("identity file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The key file is not in the expected format.
    #[error("identity file {path} is corrupt")]
    Corrupt {
        /// The file.
        path: PathBuf,
    },
    /// HSM mode: a key file that `init` creates is missing.
    #[error("{path} is missing; run `conclave-enclave init` to create it")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// HSM mode: the sealed channel key does not open.
    #[error("the sealed channel key {path} does not open: {source}")]
    Sealed {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: SealError,
    },
    /// The token failed.
    #[error(transparent)]
    Token(#[from] HsmError),
    /// A peer's channel key gives no shared secret (a low-order point):
    /// nothing can be sealed for it.
    #[error("the channel key of {0} is not usable")]
    PeerKey(NodeId),
}

/// Where the Ed25519 identity key is and how it signs.
enum IdentityKey {
    File(SigningKey),
    /// In the token, which certifies the run key that signs.
    Token {
        token: Arc<Token>,
        key: cryptoki::object::ObjectHandle,
        public: [u8; 32],
        run: Mutex<Arc<RunSigner>>,
    },
}

/// A run key and its certificate by the token's identity key.
struct RunSigner {
    key: SigningKey,
    cert: RunKey,
}

impl RunSigner {
    /// A new run key, certified by the identity key `key` in `token` for
    /// [`RUN_KEY_LIFETIME_MS`] from now.
    fn certify(token: &Token, key: cryptoki::object::ObjectHandle, node_id: &NodeId) -> Result<RunSigner, IdentityError> {
        let run = SigningKey::generate(&mut rand_core::OsRng);
        let public = run.verifying_key().to_bytes();
        let not_after_ms = crate::now_ms() + RUN_KEY_LIFETIME_MS;
        let signature = token.sign_ed25519(key, &RunKey::signing_bytes(node_id, &public, not_after_ms))?;
        Ok(RunSigner { key: run, cert: RunKey { key: public, not_after_ms, signature } })
    }
}

/// The node's secret identity keys. Not `Debug`, not `Clone`, not
/// serialisable.
pub struct NodeKeys {
    node_id: NodeId,
    mode: Mode,
    sign: IdentityKey,
    kx_secret: KxSecret,
    kx_public: KxPublic,
    /// The channel keys shared with each peer, and the peer's channel key
    /// they were derived for (peers come from the roster, so this holds a
    /// few entries), derived once: the X25519 computation is most of a
    /// message's cost.
    pairs: Mutex<HashMap<NodeId, DerivedFor>>,
    /// The run-key certificate each peer last presented, once its identity
    /// key's signature on it was checked: every broadcast carries its
    /// sender's certificate, and checking it each time was half of what
    /// checking a broadcast cost.
    certificates: Mutex<HashMap<NodeId, Checked>>,
}

/// An identity-key signature checked: the key, the signed bytes, the
/// signature.
type Checked = ([u8; 32], Vec<u8>, [u8; 64]);

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct DevKeyFile {
    sign_seed: String,
    kx_secret: String,
}

const DEV_IDENTITY_FILE: &str = "identity.key";
/// HSM mode: the sealed X25519 channel key, in the state directory.
const CHANNEL_KEY_FILE: &str = "channel.key.sealed";
/// What the sealed channel key is bound to.
pub const CHANNEL_KEY_NAME: &str = "channel-key";

/// HSM mode: where the sealed channel key is kept.
pub fn channel_key_path(state_dir: &Path) -> PathBuf {
    state_dir.join(CHANNEL_KEY_FILE)
}

impl NodeKeys {
    /// Dev mode: the keys live in a file in `state_dir`, created on first use.
    /// Anyone who can read that file can impersonate the node.
    pub fn load_or_create_dev(state_dir: &Path, node_id: NodeId) -> Result<NodeKeys, IdentityError> {
        let path = state_dir.join(DEV_IDENTITY_FILE);
        let io = |source| IdentityError::Io { path: path.clone(), source };
        if !path.exists() {
            std::fs::create_dir_all(state_dir).map_err(io)?;
            crate::seal::write_private_file(&path, &Self::new_secrets()).map_err(io)?;
        }
        let bytes = Zeroizing::new(std::fs::read(&path).map_err(io)?);
        Self::from_secrets(node_id, Mode::Dev, &bytes).ok_or(IdentityError::Corrupt { path })
    }

    /// Fresh identity secrets (both keys) in the form [`Self::from_secrets`]
    /// reads: dev mode keeps them in a file, nitro mode sealed in the host's
    /// store.
    pub fn new_secrets() -> Zeroizing<Vec<u8>> {
        let sign = SigningKey::generate(&mut rand_core::OsRng);
        let kx_secret = KxSecret::random_from_rng(rand_core::OsRng);
        let file = DevKeyFile { sign_seed: hex::encode(sign.to_bytes()), kx_secret: hex::encode(kx_secret.to_bytes()) };
        Zeroizing::new(serde_json::to_vec(&file).expect("serialisable"))
    }

    /// The keys in `secrets` (made by [`Self::new_secrets`]); `None` if
    /// they do not decode.
    pub fn from_secrets(node_id: NodeId, mode: Mode, secrets: &[u8]) -> Option<NodeKeys> {
        let file: DevKeyFile = serde_json::from_slice(secrets).ok()?;
        let mut seed = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(&file.sign_seed, seed.as_mut()).ok()?;
        let mut kx = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(&file.kx_secret, kx.as_mut()).ok()?;
        Some(NodeKeys::with(node_id, mode, IdentityKey::File(SigningKey::from_bytes(&seed)), KxSecret::from(*kx)))
    }

    /// HSM mode: the identity key pair `label` in the token, and the
    /// channel key sealed by `sealer` in `state_dir`. With `create`, makes
    /// whichever is missing (`conclave-enclave init`); without, a missing
    /// one is an error that says to run `init`.
    pub fn load_or_create_hsm(
        state_dir: &Path,
        node_id: NodeId,
        token: Arc<Token>,
        label: &str,
        sealer: &dyn Sealer,
        create: bool,
    ) -> Result<NodeKeys, IdentityError> {
        let identity = match token.identity_key(label)? {
            Some(found) => found,
            None if create => {
                token.create_identity_key(label)?;
                token.identity_key(label)?.ok_or_else(|| HsmError::MissingKey { kind: "Ed25519 identity key", label: label.into() })?
            }
            None => return Err(HsmError::MissingKey { kind: "Ed25519 identity key", label: label.into() }.into()),
        };
        let path = channel_key_path(state_dir);
        let io = |source| IdentityError::Io { path: path.clone(), source };
        let ctx = SealContext::local(&node_id, CHANNEL_KEY_NAME);
        if !path.exists() {
            if !create {
                return Err(IdentityError::Missing { path });
            }
            std::fs::create_dir_all(state_dir).map_err(io)?;
            let kx_secret = KxSecret::random_from_rng(rand_core::OsRng);
            let plaintext = Zeroizing::new(kx_secret.to_bytes().to_vec());
            let sealed = sealer.seal(&ctx, &plaintext).map_err(|source| IdentityError::Sealed { path: path.clone(), source })?;
            crate::seal::write_private_file(&path, &sealed).map_err(io)?;
        }
        let sealed = std::fs::read(&path).map_err(io)?;
        let plaintext = sealer.open(&ctx, &sealed).map_err(|source| IdentityError::Sealed { path: path.clone(), source })?;
        let kx = Zeroizing::new(<[u8; 32]>::try_from(plaintext.as_slice()).map_err(|_| IdentityError::Corrupt { path: path.clone() })?);
        let (key, public) = identity;
        let run = Mutex::new(Arc::new(RunSigner::certify(&token, key, &node_id)?));
        Ok(NodeKeys::with(node_id, Mode::Hsm, IdentityKey::Token { token, key, public, run }, KxSecret::from(*kx)))
    }

    fn with(node_id: NodeId, mode: Mode, sign: IdentityKey, kx_secret: KxSecret) -> NodeKeys {
        let kx_public = KxPublic::from(&kx_secret);
        NodeKeys { node_id, mode, sign, kx_secret, kx_public, pairs: Mutex::default(), certificates: Mutex::default() }
    }

    /// This node's id.
    pub fn node_id(&self) -> &NodeId {
        &self.node_id
    }

    /// The public identity peers put in their rosters.
    pub fn identity(&self) -> NodeIdentity {
        NodeIdentity {
            node_id: self.node_id.clone(),
            mode: self.mode,
            sign_key: match &self.sign {
                IdentityKey::File(key) => key.verifying_key().to_bytes(),
                IdentityKey::Token { public, .. } => *public,
            },
            kx_key: self.kx_public.to_bytes(),
        }
    }

    /// Signs `bytes` with the identity key, or in hsm mode with the run key
    /// it certified; a run key past half its life is replaced first.
    pub fn sign(&self, bytes: &[u8]) -> Result<NodeSignature, IdentityError> {
        match &self.sign {
            IdentityKey::File(key) => Ok(NodeSignature { signature: key.sign(bytes).to_bytes(), run_key: None }),
            IdentityKey::Token { token, key, run, .. } => {
                let signer = {
                    let mut current = run.lock().expect("run key lock");
                    if current.cert.not_after_ms < crate::now_ms() + RUN_KEY_LIFETIME_MS / 2 {
                        *current = Arc::new(RunSigner::certify(token, *key, &self.node_id)?);
                    }
                    current.clone()
                };
                Ok(NodeSignature { signature: signer.key.sign(bytes).to_bytes(), run_key: Some(signer.cert) })
            }
        }
    }

    /// The channel keys between this node and `peer`, whose channel key is
    /// `peer_kx`: derived at the first message, then kept.
    pub(crate) fn pair_keys(&self, peer: &NodeId, peer_kx: &KxPublic) -> Result<Arc<PairKeys>, IdentityError> {
        let mut pairs = self.pairs.lock().expect("channel keys lock");
        if let Some((_, keys)) = pairs.get(peer).filter(|(derived_for, _)| derived_for == peer_kx.as_bytes()) {
            return Ok(keys.clone());
        }
        let keys =
            Arc::new(PairKeys::derive((&self.node_id, &self.kx_secret, &self.kx_public), (peer, peer_kx)).ok_or_else(|| IdentityError::PeerKey(peer.clone()))?);
        pairs.insert(peer.clone(), (peer_kx.to_bytes(), keys.clone()));
        Ok(keys)
    }

    /// Whether `signature` over `bytes` (a run-key certificate) is
    /// `peer`'s, by its pinned identity key: checked the first time, then
    /// answered from memory while the peer presents the same certificate.
    pub(crate) fn peer_certified(&self, peer: &NodeId, identity: &ed25519_dalek::VerifyingKey, bytes: &[u8], signature: &[u8; 64]) -> bool {
        let key = identity.to_bytes();
        let known = |(k, b, s): &Checked| *k == key && b == bytes && s == signature;
        if self.certificates.lock().expect("certificates lock").get(peer).is_some_and(known) {
            return true;
        }
        let holds = pinned(identity)(None, bytes, signature);
        if holds {
            self.certificates.lock().expect("certificates lock").insert(peer.clone(), (key, bytes.to_vec(), *signature));
        }
        holds
    }
}

/// The verifier [`NodeSignature::holds`] takes, for a node whose pinned
/// identity key is `identity`.
pub fn pinned(identity: &ed25519_dalek::VerifyingKey) -> impl Fn(Option<&[u8; 32]>, &[u8], &[u8; 64]) -> bool + '_ {
    move |run_key, bytes, signature| {
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        match run_key {
            None => identity.verify_strict(bytes, &signature).is_ok(),
            Some(key) => ed25519_dalek::VerifyingKey::from_bytes(key).is_ok_and(|key| key.verify_strict(bytes, &signature).is_ok()),
        }
    }
}

/// Parses a roster entry's channel key: `None` for a point of small order,
/// which every clamped scalar maps to zero (RFC 7748, section 6.1), so that
/// no shared secret would come of it.
pub fn kx_public(bytes: &[u8; 32]) -> Option<KxPublic> {
    let key = KxPublic::from(*bytes);
    KxSecret::from([1; 32]).diffie_hellman(&key).was_contributory().then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_identity_is_created_once_and_reloaded() {
        let d = tempfile::tempdir().unwrap();
        let id = NodeId::new("node-1").unwrap();
        let a = NodeKeys::load_or_create_dev(d.path(), id.clone()).unwrap().identity();
        let b = NodeKeys::load_or_create_dev(d.path(), id).unwrap().identity();
        assert_eq!(a, b);
    }

    #[test]
    fn a_channel_key_of_small_order_is_refused() {
        // The identity and a point of order 8 (RFC 7748 implementations'
        // usual list): every secret maps them to the zero shared secret.
        let mut order_eight = [0u8; 32];
        hex::decode_to_slice("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800", &mut order_eight).unwrap();
        for bad in [
            [0u8; 32],
            {
                let mut one = [0u8; 32];
                one[0] = 1;
                one
            },
            order_eight,
        ] {
            assert!(kx_public(&bad).is_none());
        }
        let d = tempfile::tempdir().unwrap();
        let me = NodeKeys::load_or_create_dev(d.path(), NodeId::new("node-1").unwrap()).unwrap();
        let peer = NodeId::new("node-2").unwrap();
        assert!(matches!(me.pair_keys(&peer, &KxPublic::from([0u8; 32])), Err(IdentityError::PeerKey(p)) if p == peer));
        let good = kx_public(&me.identity().kx_key).expect("a node's own key");
        assert!(Arc::ptr_eq(&me.pair_keys(&peer, &good).unwrap(), &me.pair_keys(&peer, &good).unwrap()), "derived once, then kept");
    }
}
