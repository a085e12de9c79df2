//! Asking one node's signer about its governance state, or submitting a
//! policy to it: core NATS request on [`govern_subject`], relayed by the
//! node's host to its signer. The answer is signed by the signer's identity
//! key over the asker's nonce, so a host can neither forge nor replay one.

use crate::codec::{self, DecodeError};
use crate::policy::{Ed25519Key, SignedPolicy, MAX_POLICY_BYTES};
use crate::{NodeId, RequestError};
use serde::{Deserialize, Serialize};

/// Domain separation for a signer's signature on a [`Saying`].
pub const SAYING_SIGNING_CONTEXT: &[u8] = b"conclave/saying/v1\n";
/// Largest question or answer on the wire (a policy and its signatures).
pub const MAX_GOVERN_BYTES: usize = 2 * MAX_POLICY_BYTES + 16 * 1024;

/// Where node `node`'s signer is asked.
pub fn govern_subject(node: &NodeId) -> String {
    format!("conclave.govern.{node}")
}

/// A question to one signer. (Unknown fields cannot be refused on a
/// flattened enum; the version field is what guards the format.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovernQuery {
    /// Must be [`crate::PROTOCOL_VERSION`].
    pub v: u16,
    /// The asker's fresh challenge, echoed in the signed answer.
    #[serde(with = "codec::hex_array")]
    pub nonce: [u8; 32],
    /// What is asked.
    #[serde(flatten)]
    pub ask: GovernAsk,
}

/// What a [`GovernQuery`] asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ask", rename_all = "snake_case")]
pub enum GovernAsk {
    /// The policy the signer holds.
    Policy,
    /// Take this policy (the signer checks the admin quorum and that its
    /// version is above the one it holds), then answer as for `Policy`.
    SetPolicy {
        /// The policy.
        policy: SignedPolicy,
    },
    /// The head of the signer's audit trail, signed over the nonce.
    AuditHead,
    /// Entries of the node's audit trail from `from_seq` on, as its host
    /// stores them (answered by the host with an [`AuditPage`]; each entry
    /// is signed by the signer).
    AuditLog {
        /// The first entry wanted (from 1).
        from_seq: u64,
    },
}

/// A page of a node's audit trail, from its host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    /// Must be [`crate::PROTOCOL_VERSION`].
    pub v: u16,
    /// The node whose trail it is.
    pub node_id: NodeId,
    /// Consecutive entries from the one asked for (empty: none stored);
    /// a short page is not the end, an empty one is.
    pub result: Result<Vec<crate::audit::SignedAuditEntry>, RequestError>,
}

impl AuditPage {
    /// Decodes a page from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<AuditPage, DecodeError> {
        let page: AuditPage = codec::decode_json("audit page", bytes, MAX_GOVERN_BYTES)?;
        codec::check_version("audit page", page.v)?;
        Ok(page)
    }
}

impl GovernQuery {
    /// Decodes a question from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<GovernQuery, DecodeError> {
        let query: GovernQuery = codec::decode_json("governance query", bytes, MAX_GOVERN_BYTES)?;
        codec::check_version("governance query", query.v)?;
        Ok(query)
    }
}

/// A node's answer, as its host relays it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GovernAnswer {
    /// Must be [`crate::PROTOCOL_VERSION`].
    pub v: u16,
    /// The node that answered (the asker checks the signature, not this).
    pub node_id: NodeId,
    /// What its signer said, or why it said nothing.
    pub result: Result<Said, RequestError>,
}

impl GovernAnswer {
    /// Decodes an answer from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<GovernAnswer, DecodeError> {
        let answer: GovernAnswer = codec::decode_json("governance answer", bytes, MAX_GOVERN_BYTES)?;
        codec::check_version("governance answer", answer.v)?;
        Ok(answer)
    }
}

/// A [`Saying`] as the JSON string its signer signed, and the signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Said {
    /// The [`Saying`], exactly as signed.
    pub saying: String,
    /// The signer's signature over [`Said::signing_bytes`].
    #[serde(with = "codec::hex_array")]
    pub signature: [u8; 64],
    /// The run key that made `signature`, certified by the identity key
    /// (hsm signers); absent: the identity key made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_key: Option<crate::run_key::RunKey>,
}

impl Said {
    /// A fixed context string followed by the saying.
    pub fn signing_bytes(saying: &str) -> Vec<u8> {
        [SAYING_SIGNING_CONTEXT, saying.as_bytes()].concat()
    }

    /// Parses the saying; the signature is *not* checked here.
    pub fn parse(&self) -> Result<Saying, DecodeError> {
        let saying: Saying = codec::decode_json("saying", self.saying.as_bytes(), MAX_GOVERN_BYTES)?;
        codec::check_version("saying", saying.v)?;
        Ok(saying)
    }
}

/// What a signer states about itself, answering one nonce.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saying {
    /// Must be [`crate::PROTOCOL_VERSION`].
    pub v: u16,
    /// The signer.
    pub node: NodeId,
    /// The asker's nonce.
    #[serde(with = "codec::hex_array")]
    pub nonce: [u8; 32],
    /// What it states.
    #[serde(flatten)]
    pub fact: Fact,
}

/// A signer's statement about its governance state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fact", rename_all = "snake_case")]
pub enum Fact {
    /// The policy this signer enforces (none: it signs as without policy).
    Policy {
        /// The admin quorum it is configured with: how many signatures of
        /// which keys a policy needs (none: policies cannot be set).
        admins: Option<AdminQuorum>,
        /// The policy, as the admins signed it.
        policy: Option<SignedPolicy>,
    },
    /// The head of the signer's audit trail (itself signed, over the same
    /// nonce, so that it can be kept with an export).
    AuditHead {
        /// The head.
        head: crate::audit::SignedAuditHead,
    },
}

/// An m-of-n admin quorum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminQuorum {
    /// How many admins must sign (m).
    pub threshold: u16,
    /// The admins' keys (n).
    pub keys: Vec<Ed25519Key>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_and_sayings_have_the_documented_shape() {
        let q = GovernQuery { v: 1, nonce: [1; 32], ask: GovernAsk::Policy };
        let json = serde_json::to_string(&q).unwrap();
        assert!(json.contains(r#""ask":"policy""#), "{json}");
        assert_eq!(GovernQuery::decode(json.as_bytes()).unwrap(), q);
        assert!(GovernQuery::decode(&vec![b' '; MAX_GOVERN_BYTES + 1]).is_err());
        assert!(GovernQuery::decode(json.replacen(r#""v":1"#, r#""v":3"#, 1).as_bytes()).is_err());

        let saying = Saying { v: 1, node: NodeId::new("node-1").unwrap(), nonce: [2; 32], fact: Fact::Policy { admins: None, policy: None } };
        let said = Said { saying: serde_json::to_string(&saying).unwrap(), signature: [0; 64], run_key: None };
        assert!(said.saying.contains(r#""fact":"policy""#), "{}", said.saying);
        assert_eq!(said.parse().unwrap(), saying);
        assert!(Said::signing_bytes("{}").starts_with(b"conclave/saying/v1\n"));
    }
}
