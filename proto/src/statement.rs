//! What the signers say about a request they completed, each signed by the
//! signer's identity key. The host, NATS and the registry carry statements
//! but cannot make one: a client believes a public key, an xpub, a wallet
//! record or a signature result only when the nodes it pins (the roster
//! the signers are configured with) signed the exact statement.
//!
//! A statement travels as the JSON string that was signed, like a request
//! body ([`crate::request::SignedRequest`]), so that a client in any
//! language checks the signatures over the bytes it received and parses
//! them afterwards, with no canonical JSON to agree on.

use crate::codec::{self, DecodeError};
use crate::result::{Completed, KeygenResult};
use crate::NodeId;
use serde::{Deserialize, Serialize};

/// Domain separation for a signer's signature on a statement.
pub const STATEMENT_SIGNING_CONTEXT: &[u8] = b"conclave/statement/v1\n";
/// Largest statement string a client reads.
pub const MAX_STATEMENT_BYTES: usize = 16 * 1024;
/// Most signatures on one statement (a committee's).
pub const MAX_ENDORSEMENTS: usize = crate::request::MAX_COMMITTEE;

/// A completed request, as its signers state it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    /// Must be [`crate::PROTOCOL_VERSION`].
    pub v: u16,
    /// SHA-256 of the request body string the initiator signed
    /// ([`crate::request::SignedRequest::body`]): the statement answers
    /// that request and no other.
    #[serde(with = "codec::hex_array")]
    pub request: [u8; 32],
    /// What came of it (tagged by `kind`).
    #[serde(flatten)]
    pub result: Completed,
}

impl Statement {
    /// The wallet record this statement makes, if it is a keygen's or a
    /// reshare's.
    pub fn record(&self) -> Option<&KeygenResult> {
        match &self.result {
            Completed::Keygen(k) | Completed::Reshare(k) => Some(k),
            Completed::Sign(_) => None,
        }
    }
}

/// One signer's Ed25519 signature, by its identity key or a run key, over
/// [`Endorsed::signing_bytes`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endorsement {
    /// The signer.
    pub node: NodeId,
    /// The signature.
    #[serde(with = "codec::hex_array")]
    pub signature: [u8; 64],
    /// The run key that made `signature`, certified by the identity key
    /// (hsm signers); absent: the identity key made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_key: Option<crate::run_key::RunKey>,
    /// The head of the signer's audit trail once it recorded this request,
    /// signed over the request body's hash: how far its trail must reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_head: Option<crate::audit::SignedAuditHead>,
}

/// A statement and its signatures: every successful result, and every
/// wallet record (signed by every member of the committee that stored it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endorsed {
    /// The [`Statement`] as a JSON string, exactly as signed.
    pub statement: String,
    /// Who signed it.
    pub endorsements: Vec<Endorsement>,
}

impl Endorsed {
    /// The bytes each signer signs: a fixed context string followed by the
    /// statement string.
    pub fn signing_bytes(statement: &str) -> Vec<u8> {
        [STATEMENT_SIGNING_CONTEXT, statement.as_bytes()].concat()
    }

    /// Parses the statement: size, shape, version. The signatures are *not*
    /// checked here; a reader that trusts the statement must check them.
    pub fn parse(&self) -> Result<Statement, DecodeError> {
        if self.endorsements.len() > MAX_ENDORSEMENTS {
            return Err(DecodeError::TooLarge { what: "endorsements", len: self.endorsements.len(), limit: MAX_ENDORSEMENTS });
        }
        let statement: Statement = codec::decode_json("statement", self.statement.as_bytes(), MAX_STATEMENT_BYTES)?;
        codec::check_version("statement", statement.v)?;
        Ok(statement)
    }

    /// The wallet record a keygen's or reshare's statement makes, *not*
    /// checked: for routing by a host, never for what a client believes.
    pub fn unverified_record(&self) -> Option<KeygenResult> {
        self.parse().ok()?.record().cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Scheme, WalletId};

    fn keygen() -> Statement {
        Statement {
            v: 1,
            request: [3; 32],
            result: Completed::Keygen(KeygenResult {
                wallet: WalletId::new("w").unwrap(),
                scheme: Scheme::Eddsa,
                public_key: vec![1; 32],
                xpub: None,
                version: 1,
                threshold: 2,
                committee: vec![NodeId::new("a").unwrap(), NodeId::new("b").unwrap()],
            }),
        }
    }

    #[test]
    fn statements_have_the_documented_shape_and_are_bounded() {
        let json = serde_json::to_string(&keygen()).unwrap();
        assert!(json.starts_with(r#"{"v":1,"request":"0303"#), "{json}");
        assert!(json.contains(r#""kind":"keygen""#), "{json}");
        let e = Endorsed { statement: json, endorsements: vec![] };
        assert_eq!(e.parse().unwrap(), keygen());
        assert_eq!(e.unverified_record().unwrap().wallet.as_str(), "w");
        assert_eq!(Endorsed::signing_bytes("{}"), b"conclave/statement/v1\n{}".to_vec());

        let other_version = Endorsed { statement: e.statement.replacen(r#""v":1"#, r#""v":7"#, 1), endorsements: vec![] };
        assert!(matches!(other_version.parse(), Err(DecodeError::Version { got: 7, .. })));
        let big = Endorsed { statement: " ".repeat(MAX_STATEMENT_BYTES + 1), endorsements: vec![] };
        assert!(matches!(big.parse(), Err(DecodeError::TooLarge { .. })));
        let crowded = Endorsed {
            statement: e.statement.clone(),
            endorsements: vec![Endorsement { node: NodeId::new("a").unwrap(), signature: [0; 64], run_key: None, audit_head: None }; MAX_ENDORSEMENTS + 1],
        };
        assert!(matches!(crowded.parse(), Err(DecodeError::TooLarge { .. })));
    }
}
