//! Why a document is refused.

use std::fmt;

/// A certificate of the document's chain, named by where it sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CertPosition {
    /// `cabundle[i]`: 0 is the root, the last one issued the leaf.
    Bundle(usize),
    /// `certificate`: the leaf, whose key signs the document.
    Leaf,
}

impl fmt::Display for CertPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertPosition::Bundle(i) => write!(f, "cabundle[{i}]"),
            CertPosition::Leaf => f.write_str("certificate (leaf)"),
        }
    }
}

/// Why a document is refused; [`AttestError::check`] names the failed check.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// The bytes are not a well-formed Nitro attestation document.
    #[error("malformed document: {reason}")]
    Malformed {
        /// What is wrong, naming the field.
        reason: String,
    },
    /// The COSE_Sign1 signature does not verify under the leaf certificate's key.
    #[error("document signature: {reason}")]
    Signature {
        /// Why.
        reason: String,
    },
    /// The certificate chain does not lead to the trusted root.
    #[error("certificate chain, {cert}: {reason}")]
    Chain {
        /// The certificate at fault.
        cert: CertPosition,
        /// Why.
        reason: String,
    },
    /// A certificate is not valid at the verification instant.
    #[error("{cert} ({subject}) is valid from {} to {}, not at {}", utc(*not_before_ms), utc(*not_after_ms), utc(*at_ms))]
    Expired {
        /// The certificate.
        cert: CertPosition,
        /// Its subject, as RFC 4514 text.
        subject: String,
        /// Start of its validity, ms since the Unix epoch.
        not_before_ms: u64,
        /// End of its validity, ms since the Unix epoch.
        not_after_ms: u64,
        /// The verification instant, ms since the Unix epoch.
        at_ms: u64,
    },
    /// A PCR differs from the expected value, or is missing.
    #[error("PCR{index} is {}, expected {}", actual.as_deref().map(hex::encode).unwrap_or_else(|| "missing".into()), hex::encode(expected))]
    Pcr {
        /// The PCR index.
        index: u8,
        /// What the policy expects.
        expected: Vec<u8>,
        /// What the document states (`None`: absent).
        actual: Option<Vec<u8>>,
    },
    /// The nonce differs from the expected one, or is missing.
    #[error("nonce is {}, expected {}", actual.as_deref().map(hex::encode).unwrap_or_else(|| "missing".into()), hex::encode(expected))]
    Nonce {
        /// What the policy expects.
        expected: Vec<u8>,
        /// What the document states (`None`: absent).
        actual: Option<Vec<u8>>,
    },
    /// The enclave runs in debug mode (its image measurements are zero), and
    /// the policy does not allow debug mode.
    #[error("debug-mode enclave (PCRs {} all zero) and debug mode is not allowed", fmt_indexes(zero_pcrs))]
    Debug {
        /// The image measurements (of PCR 0, 1, 2) that are all zero.
        zero_pcrs: Vec<u8>,
    },
}

/// RFC 3339, UTC, to the second: certificate validity has no finer grain.
fn utc(ms: u64) -> String {
    x509_cert::der::DateTime::from_unix_duration(std::time::Duration::from_millis(ms))
        .map_or_else(|_| format!("{ms} ms after the Unix epoch"), |t| t.to_string())
}

fn fmt_indexes(indexes: &[u8]) -> String {
    indexes.iter().map(u8::to_string).collect::<Vec<_>>().join(", ")
}

impl AttestError {
    /// The failed check's stable name: `malformed`, `signature`, `chain`,
    /// `expired`, `pcr`, `nonce` or `debug`.
    pub fn check(&self) -> &'static str {
        match self {
            AttestError::Malformed { .. } => "malformed",
            AttestError::Signature { .. } => "signature",
            AttestError::Chain { .. } => "chain",
            AttestError::Expired { .. } => "expired",
            AttestError::Pcr { .. } => "pcr",
            AttestError::Nonce { .. } => "nonce",
            AttestError::Debug { .. } => "debug",
        }
    }

    pub(crate) fn malformed(reason: impl Into<String>) -> Self {
        AttestError::Malformed { reason: reason.into() }
    }

    pub(crate) fn chain(cert: CertPosition, reason: impl Into<String>) -> Self {
        AttestError::Chain { cert, reason: reason.into() }
    }
}
