//! The root certificate a verifier trusts: the AWS Nitro Enclaves root by
//! default, or one given explicitly (a simulated NSM's dev CA, for tests and
//! dev mode).

use crate::chain::Cert;
use crate::error::CertPosition;
use sha2::{Digest, Sha256};
use x509_cert::der::pem;

/// The AWS Nitro Enclaves root certificate, as AWS publishes it
/// (`AWS_NitroEnclaves_Root-G1.zip`).
const AWS_NITRO_ROOT_PEM: &str = include_str!("aws_nitro_root.pem");

/// SHA-256 of the AWS Nitro Enclaves root certificate's DER form, as AWS
/// publishes it: the pin that the embedded PEM must match.
pub const AWS_NITRO_ROOT_SHA256: &str = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b";

/// Why a root certificate cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RootError {
    /// Not a PEM `CERTIFICATE` block.
    #[error("not a PEM certificate: {0}")]
    Pem(String),
    /// Not a DER X.509 certificate with an ECDSA P-384 key.
    #[error("not a usable root certificate: {0}")]
    Certificate(String),
}

/// A root certificate to which document chains must lead (`cabundle[0]`
/// must be byte for byte this certificate).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedRoot {
    der: Vec<u8>,
    fingerprint: [u8; 32],
}

pub(crate) fn fingerprint(der: &[u8]) -> [u8; 32] {
    Sha256::digest(der).into()
}

impl TrustedRoot {
    /// The AWS Nitro Enclaves root, checked against its published
    /// fingerprint [`AWS_NITRO_ROOT_SHA256`] on every call.
    ///
    /// # Panics
    ///
    /// If the embedded certificate does not match the pin: the build is
    /// broken (a unit test calls this), and trusting anything else would be
    /// worse than stopping.
    pub fn aws_nitro() -> TrustedRoot {
        let root = TrustedRoot::from_pem(AWS_NITRO_ROOT_PEM).expect("the embedded AWS Nitro root is a certificate");
        assert_eq!(root.fingerprint_hex(), AWS_NITRO_ROOT_SHA256, "the embedded AWS Nitro root does not match its pinned fingerprint");
        root
    }

    /// A root from a PEM `CERTIFICATE` block.
    pub fn from_pem(pem: &str) -> Result<TrustedRoot, RootError> {
        let (label, der) = pem::decode_vec(pem.as_bytes()).map_err(|e| RootError::Pem(e.to_string()))?;
        if label != "CERTIFICATE" {
            return Err(RootError::Pem(format!("block is {label:?}, expected CERTIFICATE")));
        }
        TrustedRoot::from_der(der)
    }

    /// A root from a DER certificate; it must carry an ECDSA P-384 key,
    /// since every Nitro chain is P-384.
    pub fn from_der(der: Vec<u8>) -> Result<TrustedRoot, RootError> {
        let cert = Cert::parse(CertPosition::Bundle(0), der).map_err(|e| RootError::Certificate(e.to_string()))?;
        cert.key().map_err(|e| RootError::Certificate(e.to_string()))?;
        Ok(TrustedRoot { fingerprint: fingerprint(&cert.der), der: cert.der })
    }

    /// The certificate, DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The certificate as a PEM `CERTIFICATE` block.
    pub fn to_pem(&self) -> String {
        pem::encode_string("CERTIFICATE", pem::LineEnding::LF, &self.der).expect("a certificate fits in PEM")
    }

    /// SHA-256 of the DER certificate.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }

    /// SHA-256 of the DER certificate, lowercase hex.
    pub fn fingerprint_hex(&self) -> String {
        hex::encode(self.fingerprint)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_aws_root_matches_its_pinned_fingerprint() {
        let root = TrustedRoot::aws_nitro();
        assert_eq!(root.fingerprint_hex(), AWS_NITRO_ROOT_SHA256);
        assert_eq!(TrustedRoot::from_pem(&root.to_pem()).unwrap(), root);
    }

    #[test]
    fn a_root_must_be_a_p384_certificate_in_a_certificate_block() {
        let pem = TrustedRoot::aws_nitro().to_pem();
        assert!(matches!(TrustedRoot::from_pem(&pem.replace("CERTIFICATE", "PUBLIC KEY")), Err(RootError::Pem(_))));
        assert!(matches!(TrustedRoot::from_pem("not pem"), Err(RootError::Pem(_))));
        assert!(matches!(TrustedRoot::from_der(vec![0x30, 0x00]), Err(RootError::Certificate(_))));
    }
}
