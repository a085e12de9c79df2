//! Key shares as the protocols take them, decoded from a share's sealed
//! plaintext.
//!
//! Decoding a key share checks its public part: every party's public share
//! decompressed and checked against the key and the VSS setup. That was a
//! quarter of a signer's CPU per EdDSA signature, and a share's public part
//! never changes. So the public part of a share checked once is kept, under
//! the SHA-256 of the share's plaintext, and a later decoding of the same
//! plaintext reads only the secret and checks it against its public share
//! (what [`key_share::Valid::from_parts`] checks). Nothing secret is kept
//! (a hash of each plaintext).

use generic_ec::{Curve, NonZero, SecretScalar};
use key_share::{CoreKeyShare, DirtyKeyInfo, Valid};
use sha2::Digest;
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

/// Shares whose public part is kept at most; past it the kept ones are
/// forgotten (a signer serves far fewer wallets at a time).
const MAX_KEPT: usize = 4096;

/// A checked public part: the party's index and the key info.
type Checked<E> = (u16, DirtyKeyInfo<E>);

/// A [`Checked`] of some curve.
type AnyChecked = Arc<dyn Any + Send + Sync>;

/// Checked public parts by the SHA-256 of the curve's name and the share's
/// plaintext.
static CHECKED: LazyLock<Mutex<HashMap<[u8; 32], AnyChecked>>> = LazyLock::new(Mutex::default);

/// Why a share's plaintext is not a key share.
#[derive(Debug, thiserror::Error)]
pub enum KeyShareError {
    /// It does not decode (or, decoded in full, its public part does not
    /// check).
    #[error("does not decode: {0}")]
    Decode(#[from] serde_json::Error),
    /// Its secret does not match its public share.
    #[error("its secret does not match its public share: {0}")]
    Invalid(key_share::InvalidCoreShare),
}

/// The secret of an encoded key share, its other fields left unread.
#[derive(serde::Deserialize)]
#[serde(bound = "")]
struct Secret<E: Curve> {
    #[serde(with = "serde_with::As::<generic_ec::serde::Compact>")]
    x: NonZero<SecretScalar<E>>,
}

/// Decodes `plaintext` (a `key_share` JSON encoding) into a checked key
/// share.
pub fn decode<E: Curve>(plaintext: &[u8]) -> Result<CoreKeyShare<E>, KeyShareError> {
    let digest: [u8; 32] = sha2::Sha256::new().chain_update(E::CURVE_NAME).chain_update(plaintext).finalize().into();
    let kept = CHECKED.lock().expect("key shares lock").get(&digest).cloned();
    if let Some((i, key_info)) = kept.and_then(|k| k.downcast::<Checked<E>>().ok()).as_deref() {
        let Secret { x } = serde_json::from_slice(plaintext)?;
        return Valid::from_parts((*i, key_info.clone(), x)).map_err(|e| KeyShareError::Invalid(e.into_error()));
    }
    let share: CoreKeyShare<E> = serde_json::from_slice(plaintext)?;
    let mut checked = CHECKED.lock().expect("key shares lock");
    if checked.len() >= MAX_KEPT {
        checked.clear();
    }
    checked.insert(digest, Arc::new((share.i, share.key_info.clone())));
    Ok(share)
}

#[cfg(test)]
mod tests {
    use super::*;
    use generic_ec::curves::Ed25519;

    #[test]
    fn a_share_decodes_the_same_the_second_time_and_a_changed_secret_is_refused() {
        let shares = crate::eddsa::testing::dealt(3, 2, false);
        let first: CoreKeyShare<Ed25519> = decode(&shares[0]).unwrap();
        let again: CoreKeyShare<Ed25519> = decode(&shares[0]).unwrap();
        assert_eq!(serde_json::to_vec(&first).unwrap(), serde_json::to_vec(&again).unwrap());
        assert_eq!(serde_json::to_vec(&first).unwrap(), *shares[0], "as decoded in full");
        // The same public part with another party's secret: the plaintext
        // differs, so nothing kept applies, and the full check refuses it.
        let mut json: serde_json::Value = serde_json::from_slice(&shares[0]).unwrap();
        let other: serde_json::Value = serde_json::from_slice(&shares[1]).unwrap();
        json["x"] = other["x"].clone();
        assert!(decode::<Ed25519>(&serde_json::to_vec(&json).unwrap()).is_err());
    }
}
