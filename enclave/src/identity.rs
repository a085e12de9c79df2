//! The node's long-term identity: an Ed25519 key that signs its broadcasts
//! and an X25519 key that peers encrypt to. Neither leaves the enclave.

use conclave_proto::link::{Mode, NodeIdentity};
use conclave_proto::NodeId;
use ed25519_dalek::{Signer, SigningKey};
use hpke::{kem::X25519HkdfSha256, Deserializable, Kem, Serializable};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// The KEM of the end-to-end channel.
pub type ChannelKem = X25519HkdfSha256;
/// A peer's channel public key.
pub type KxPublic = <ChannelKem as Kem>::PublicKey;
type KxSecret = <ChannelKem as Kem>::PrivateKey;

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
}

/// The node's secret identity keys. Not `Debug`, not `Clone`, not
/// serialisable.
pub struct NodeKeys {
    node_id: NodeId,
    mode: Mode,
    sign: SigningKey,
    kx_secret: KxSecret,
    kx_public: KxPublic,
}

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct DevKeyFile {
    sign_seed: String,
    kx_secret: String,
}

const DEV_IDENTITY_FILE: &str = "identity.key";

impl NodeKeys {
    /// Dev mode: the keys live in a file in `state_dir`, created on first use.
    /// Anyone who can read that file can impersonate the node.
    pub fn load_or_create_dev(state_dir: &Path, node_id: NodeId) -> Result<NodeKeys, IdentityError> {
        let path = state_dir.join(DEV_IDENTITY_FILE);
        let io = |source| IdentityError::Io { path: path.clone(), source };
        if !path.exists() {
            std::fs::create_dir_all(state_dir).map_err(io)?;
            let sign = SigningKey::generate(&mut rand_core::OsRng);
            let (kx_secret, _) = ChannelKem::gen_keypair(&mut rand_core::OsRng);
            let file = DevKeyFile {
                sign_seed: hex::encode(sign.to_bytes()),
                kx_secret: hex::encode(kx_secret.to_bytes()),
            };
            let json = Zeroizing::new(serde_json::to_vec(&file).expect("serialisable"));
            crate::seal::write_private_file(&path, &json).map_err(io)?;
        }
        let bytes = Zeroizing::new(std::fs::read(&path).map_err(io)?);
        let corrupt = || IdentityError::Corrupt { path: path.clone() };
        let file: DevKeyFile = serde_json::from_slice(&bytes).map_err(|_| corrupt())?;
        let mut seed = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(&file.sign_seed, seed.as_mut()).map_err(|_| corrupt())?;
        let kx = Zeroizing::new(hex::decode(&file.kx_secret).map_err(|_| corrupt())?);
        let kx_secret = KxSecret::from_bytes(&kx).map_err(|_| corrupt())?;
        let kx_public = ChannelKem::sk_to_pk(&kx_secret);
        Ok(NodeKeys { node_id, mode: Mode::Dev, sign: SigningKey::from_bytes(&seed), kx_secret, kx_public })
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
            sign_key: self.sign.verifying_key().to_bytes(),
            kx_key: self.kx_public.to_bytes().into(),
        }
    }

    /// Signs `bytes` with the identity key.
    pub fn sign(&self, bytes: &[u8]) -> [u8; 64] {
        self.sign.sign(bytes).to_bytes()
    }

    pub(crate) fn kx_pair(&self) -> (&KxSecret, &KxPublic) {
        (&self.kx_secret, &self.kx_public)
    }
}

/// Parses a roster entry's channel key.
pub fn kx_public(bytes: &[u8; 32]) -> Option<KxPublic> {
    KxPublic::from_bytes(bytes).ok()
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
}
