//! What holds this node's secrets, by mode: the identity keys and the
//! sealer. `init` creates what is missing; `run` and `reseal` refuse to
//! start without it, with an error that says what to do.

use crate::attestation::Nsm;
use crate::config::EnclaveConfig;
use crate::floor::Floors;
use crate::hsm::{HsmError, Token};
use crate::identity::{IdentityError, NodeKeys};
use crate::nitro::NitroConfig;
use crate::seal::{KeySealer, SealContext, SealError, Sealer, TokenSealer};
use conclave_proto::link::Mode;
use conclave_proto::NodeId;
use std::sync::Arc;

/// The node's identity and its sealer.
pub struct Custody {
    /// Identity keys.
    pub keys: NodeKeys,
    /// Seals and opens blobs.
    pub sealer: Box<dyn Sealer>,
    /// Produces attestation documents about this signer, if its mode can.
    pub nsm: Option<Nsm>,
    /// The lowest version of each sealed slot this signer opens.
    pub floors: Floors,
}

/// Why the node's secrets are not usable.
#[derive(Debug, thiserror::Error)]
pub enum CustodyError {
    /// The token cannot be used.
    #[error(transparent)]
    Hsm(#[from] HsmError),
    /// The identity cannot be loaded.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The dev seal key cannot be loaded.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// Nitro mode's custody opens only at `run`, through the host (KMS and
    /// the host's store); `init` and `reseal` do not apply to it.
    #[error("mode `nitro` opens its keys at `run`, through its host and KMS; `{0}` does not apply")]
    NitroAtRunOnly(&'static str),
    /// Nitro mode: the enclave's attestation device.
    #[error(transparent)]
    Nsm(crate::attestation::AttestationError),
    /// Nitro mode: KMS did not release the seal key.
    #[error(transparent)]
    Kms(#[from] crate::kms::KmsError),
    /// Nitro mode: the host did not answer a custody call.
    #[error("custody through the host: {0}")]
    Host(#[from] crate::link::HostCallError),
    /// Nitro mode: the host has no credentials for KMS.
    #[error("the host has no AWS credentials for KMS: {0}")]
    NoCredentials(String),
    /// Nitro mode: the host keeps sealed identity keys but not the wrapped
    /// seal key they were sealed under; a new key would not open them.
    #[error("the host's store has custody/identity but no custody/seal-key: restore custody/ from a backup (a new seal key cannot open the identity)")]
    SealKeyLost,
    /// Nitro mode: the sealed identity does not open or decode.
    #[error("custody/identity does not open under this node's seal key: {0}")]
    IdentityUnreadable(String),
    /// Nitro mode: KMS's address is not usable.
    #[error("KMS endpoint: {0}")]
    Endpoint(String),
    /// The dev cluster's attestation CA cannot be used.
    #[error(transparent)]
    Attestation(#[from] crate::attestation::AttestationError),
}

/// Whether missing keys may be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// `init`: create them.
    Create,
    /// `run`, `reseal`: refuse.
    Refuse,
}

impl Custody {
    /// Opens (or with [`Missing::Create`], makes) the node's secrets.
    pub fn open(config: &EnclaveConfig, missing: Missing) -> Result<Custody, CustodyError> {
        let create = missing == Missing::Create;
        match (config.mode, &config.hsm) {
            (Mode::Hsm, Some(hsm)) => {
                let token = Arc::new(Token::open(hsm)?);
                if create && token.seal_key(&hsm.seal_key_label)?.is_none() {
                    token.create_seal_key(&hsm.seal_key_label)?;
                }
                let sealer = TokenSealer::new(token.clone(), &hsm.seal_key_label)?;
                let floors = Floors::token(token.clone());
                let keys = NodeKeys::load_or_create_hsm(&config.state_dir, config.node_id.clone(), token, &hsm.identity_key_label, &sealer, create)?;
                Ok(Custody { keys, sealer: Box::new(sealer), nsm: None, floors })
            }
            (Mode::Nitro, _) => Err(CustodyError::NitroAtRunOnly(if create { "init" } else { "reseal" })),
            // Config validation admits dev without, and hsm only with, a token.
            (Mode::Dev, _) | (Mode::Hsm, None) => {
                let keys = NodeKeys::load_or_create_dev(&config.state_dir, config.node_id.clone())?;
                let sealer = KeySealer::load_or_create(&config.state_dir)?;
                let nsm = match &config.dev_attestation_ca {
                    Some(path) => Some(crate::attestation::simulated(path, &config.node_id)?),
                    None => None,
                };
                Ok(Custody { keys, sealer: Box::new(sealer), nsm, floors: Floors::file(&config.state_dir) })
            }
        }
    }

    /// Nitro mode: opens the node's custody through `host`, the connection
    /// the enclave serves afterwards. The seal key is a KMS data key: on
    /// first start `GenerateDataKey`, whose wrapped form the host keeps
    /// (`custody/seal-key`); on every later start `Decrypt` of it. The
    /// identity keys are sealed under it in `custody/identity`, made on
    /// first start. The seal key is stored before the identity, so a start
    /// interrupted in between finds the key and makes the identity again.
    /// `nsm` is the enclave's NSM (tests pass a simulated one).
    pub async fn unlock_nitro(node: &NodeId, nitro: &NitroConfig, nsm: Nsm, host: &mut crate::link::HostConnection) -> Result<Custody, CustodyError> {
        use crate::kms::{self, Operation};
        use conclave_proto::link::{BlobSlot, FromEnclave, StoredBlob, ToEnclave};
        let endpoint = kms::Endpoint::new(&nitro.kms_region, nitro.kms_proxy.clone(), nitro.kms_ca_file.as_deref()).map_err(CustodyError::Endpoint)?;
        let credentials: kms::Credentials = match host.call(|call| FromEnclave::Credentials { call }).await? {
            ToEnclave::Credentials { result: Ok(credentials), .. } => credentials.into(),
            ToEnclave::Credentials { result: Err(reason), .. } => return Err(CustodyError::NoCredentials(reason)),
            _ => return Err(crate::link::HostCallError::Confused.into()),
        };
        let (key, wrapped) = match host.load(BlobSlot::SealKey).await? {
            Some(stored) => {
                let (key, _) = kms::call(&endpoint, &credentials, &nsm, Operation::Decrypt, &nitro.kms_key_id, node, Some(&stored.sealed)).await?;
                (key, stored.sealed)
            }
            None => {
                if host.load(BlobSlot::Identity).await?.is_some() {
                    return Err(CustodyError::SealKeyLost);
                }
                let (key, wrapped) = kms::call(&endpoint, &credentials, &nsm, Operation::GenerateDataKey, &nitro.kms_key_id, node, None).await?;
                let wrapped = wrapped.expect("parse_answer: GenerateDataKey has a CiphertextBlob");
                host.store(BlobSlot::SealKey, StoredBlob { version: 1, sealed: wrapped.clone() }).await?;
                tracing::info!(key = %nitro.kms_key_id, "first start: KMS made this node's seal key; the host keeps it wrapped");
                (key, wrapped)
            }
        };
        let sealer = KeySealer::kms(&key, &wrapped);
        let keys = match host.load(BlobSlot::Identity).await? {
            Some(stored) => {
                let secrets = sealer
                    .open(&SealContext::blob(node, &BlobSlot::Identity, stored.version), &stored.sealed)
                    .map_err(|e| CustodyError::IdentityUnreadable(e.to_string()))?;
                NodeKeys::from_secrets(node.clone(), Mode::Nitro, &secrets).ok_or_else(|| CustodyError::IdentityUnreadable("the keys do not decode".into()))?
            }
            None => {
                let secrets = NodeKeys::new_secrets();
                let sealed = sealer.seal(&SealContext::blob(node, &BlobSlot::Identity, 1), &secrets)?;
                host.store(BlobSlot::Identity, StoredBlob { version: 1, sealed }).await?;
                let keys = NodeKeys::from_secrets(node.clone(), Mode::Nitro, &secrets).expect("fresh secrets decode");
                tracing::warn!(identity = %serde_json::to_string(&keys.identity()).expect("identity serialises"), "first start: made this node's identity; add it to every node's roster");
                keys
            }
        };
        Ok(Custody { keys, sealer: Box::new(sealer), nsm: Some(nsm), floors: Floors::memory() })
    }
}
