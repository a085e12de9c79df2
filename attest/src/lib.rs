//! AWS Nitro Enclaves attestation documents: parse, verify, and (for dev
//! mode and tests) simulate.
//!
//! A document is a COSE_Sign1 (RFC 9052) signed with ES384 by a leaf
//! certificate that chains, through the document's `cabundle`, to the AWS
//! Nitro Enclaves root. [`verify`] parses untrusted bytes syntactically
//! first ([`Document::parse`]), then checks the signature, the chain, the
//! validity of every certificate at a given instant, debug mode, the
//! expected PCRs and the nonce, as a [`Policy`] requires. Each failure names
//! its check ([`AttestError::check`]).
//!
//! [`sim::SimulatedNsm`] produces documents of the same format under a dev
//! CA of its own. Nothing here trusts that CA unless a [`Policy`] names its
//! root explicitly.

mod chain;
mod cose;
mod document;
mod error;
mod policy;
mod root;
pub mod sim;

pub use document::{Claims, Document, MAX_DOCUMENT_LEN};
pub use error::{AttestError, CertPosition};
pub use policy::{Policy, Verified};
pub use root::{RootError, TrustedRoot, AWS_NITRO_ROOT_SHA256};

/// Parses and verifies an attestation document against `policy`.
pub fn verify(document: &[u8], policy: &Policy) -> Result<Verified, AttestError> {
    Document::parse(document)?.verify(policy)
}
