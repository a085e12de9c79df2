//! What a verifier requires of a document, and the verified result.

use crate::document::{Claims, Document};
use crate::error::AttestError;
use crate::root::TrustedRoot;
use std::collections::BTreeMap;
use std::ops::Deref;
use std::time::{SystemTime, UNIX_EPOCH};

/// What a document must satisfy. There is no default: every caller says
/// which root it trusts, at which instant, and whether a debug-mode enclave
/// is acceptable.
#[derive(Clone, Debug)]
pub struct Policy {
    /// The root the chain must lead to: [`TrustedRoot::aws_nitro`] for real
    /// enclaves.
    pub root: TrustedRoot,
    /// PCR index to the exact measurement required; PCRs not listed are not
    /// checked. Empty checks none: the document then proves only that it
    /// comes from some enclave under `root`, which is enough for an auditor
    /// reading PCRs, never for admitting a peer.
    pub pcrs: BTreeMap<u8, Vec<u8>>,
    /// The nonce the document must carry (the verifier's fresh challenge),
    /// or `None` to accept any or none.
    pub nonce: Option<Vec<u8>>,
    /// The instant at which every certificate must be valid: now for a live
    /// peer, the document's timestamp (or a chosen instant) for an audit.
    pub at: SystemTime,
    /// Accept an enclave started in debug mode, whose memory its host can
    /// read and whose measurements are zero. Only for development.
    pub allow_debug: bool,
}

/// The image measurements that debug mode zeroes: enclave image, kernel and
/// bootstrap, application.
const IMAGE_PCRS: [u8; 3] = [0, 1, 2];

/// A document that passed every check of a [`Policy`]. It derefs to its
/// [`Claims`]; it can only be obtained from [`verify`](crate::verify) or
/// [`Document::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    claims: Claims,
    root_fingerprint: [u8; 32],
}

impl Verified {
    /// SHA-256 of the root certificate the chain led to.
    pub fn root_fingerprint(&self) -> [u8; 32] {
        self.root_fingerprint
    }

    /// The verified claims, by value.
    pub fn into_claims(self) -> Claims {
        self.claims
    }
}

impl Deref for Verified {
    type Target = Claims;

    fn deref(&self) -> &Claims {
        &self.claims
    }
}

impl Document {
    /// Checks, in this order: the document's signature by the leaf
    /// certificate's key (`signature`), the certificate chain up to
    /// `policy.root` (`chain`), every certificate's validity at `policy.at`
    /// (`expired`), debug mode (`debug`), the expected PCRs (`pcr`), the
    /// nonce (`nonce`).
    ///
    /// The signature comes first because it is one ECDSA verification
    /// against five for the chain: a flood of forged documents costs the
    /// verifier little.
    pub fn verify(&self, policy: &Policy) -> Result<Verified, AttestError> {
        let at_ms = policy.at.duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        crate::cose::verify(&self.envelope, &self.payload, &self.certificate.key()?)?;
        crate::chain::verify(&self.cabundle, &self.certificate, &policy.root, at_ms)?;
        let claims = &self.claims;
        if !policy.allow_debug {
            let zero_pcrs: Vec<u8> = IMAGE_PCRS.into_iter().filter(|i| claims.pcrs.get(i).is_some_and(|m| m.iter().all(|b| *b == 0))).collect();
            // One zeroed image measurement is enough: a real measurement is
            // a hash and never zero, so the image is not attested.
            if !zero_pcrs.is_empty() {
                return Err(AttestError::Debug { zero_pcrs });
            }
        }
        for (index, expected) in &policy.pcrs {
            let actual = claims.pcrs.get(index);
            if actual != Some(expected) {
                return Err(AttestError::Pcr { index: *index, expected: expected.clone(), actual: actual.cloned() });
            }
        }
        if let Some(expected) = &policy.nonce {
            if claims.nonce.as_ref() != Some(expected) {
                return Err(AttestError::Nonce { expected: expected.clone(), actual: claims.nonce.clone() });
            }
        }
        Ok(Verified { claims: claims.clone(), root_fingerprint: policy.root.fingerprint() })
    }
}
