//! What holds this node's secrets, by mode: the identity keys and the
//! sealer. `init` creates what is missing; `run` and `reseal` refuse to
//! start without it, with an error that says what to do.

use crate::attestation::Nsm;
use crate::config::EnclaveConfig;
use crate::hsm::{HsmError, Token};
use crate::identity::{IdentityError, NodeKeys};
use crate::seal::{DevSealer, SealError, Sealer, TokenSealer};
use conclave_proto::link::Mode;
use std::sync::Arc;

/// The node's identity and its sealer.
pub struct Custody {
    /// Identity keys.
    pub keys: NodeKeys,
    /// Seals and opens blobs.
    pub sealer: Box<dyn Sealer>,
    /// Produces attestation documents about this signer, if its mode can.
    pub nsm: Option<Nsm>,
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
    /// Nitro mode needs the NSM and KMS sealing, which this build does not
    /// have yet: it refuses rather than fall back to another custody.
    #[error("mode `nitro` (NSM attestation, KMS sealing) is not available in this build; use `hsm`")]
    NitroUnavailable,
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
                let keys = NodeKeys::load_or_create_hsm(
                    &config.state_dir,
                    config.node_id.clone(),
                    token,
                    &hsm.identity_key_label,
                    &sealer,
                    create,
                )?;
                Ok(Custody { keys, sealer: Box::new(sealer), nsm: None })
            }
            (Mode::Nitro, _) => Err(CustodyError::NitroUnavailable),
            // Config validation admits dev without, and hsm only with, a token.
            (Mode::Dev, _) | (Mode::Hsm, None) => {
                let keys = NodeKeys::load_or_create_dev(&config.state_dir, config.node_id.clone())?;
                let sealer = DevSealer::load_or_create(&config.state_dir)?;
                let nsm = match &config.dev_attestation_ca {
                    Some(path) => Some(crate::attestation::simulated(path, &config.node_id)?),
                    None => None,
                };
                Ok(Custody { keys, sealer: Box::new(sealer), nsm })
            }
        }
    }
}
