//! Asking a node for an attestation document: core NATS request on
//! [`attest_subject`], answered by the node's host with what its enclave
//! produced. The host cannot forge a document; the asker verifies it (chain,
//! nonce, measurements, and the binding of the node's identity).

use crate::{codec, NodeId, RequestError};
use serde::{Deserialize, Serialize};

/// The shortest and longest nonce a node answers (the NSM takes up to 512
/// bytes; 16 are enough to be unpredictable).
pub const NONCE_BYTES: std::ops::RangeInclusive<usize> = 16..=64;
/// The largest document accepted (a real one is about 4.5 KiB).
pub const MAX_DOCUMENT_BYTES: usize = 16 * 1024;
/// The largest question or answer on the wire.
pub const MAX_ATTEST_MESSAGE_BYTES: usize = 32 * 1024;

/// Where node `node` is asked for a document.
pub fn attest_subject(node: &NodeId) -> String {
    format!("conclave.attest.{node}")
}

/// An attestation document (COSE_Sign1), as bytes.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Document(#[serde(with = "codec::b64")] pub Vec<u8>);

impl std::fmt::Debug for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Document({} bytes)", self.0.len())
    }
}

/// A request for a document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestQuery {
    /// Must be [`crate::PROTOCOL_VERSION`].
    pub v: u16,
    /// The asker's fresh challenge, echoed in the document.
    #[serde(with = "codec::hex_bytes")]
    pub nonce: Vec<u8>,
}

/// A node's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestAnswer {
    /// Must be [`crate::PROTOCOL_VERSION`].
    pub v: u16,
    /// The node that answered.
    pub node_id: NodeId,
    /// The document, or why there is none.
    pub result: Result<Document, RequestError>,
}

impl AttestQuery {
    /// Decodes a question from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<AttestQuery, crate::codec::DecodeError> {
        let query: AttestQuery = codec::decode_json("attestation query", bytes, MAX_ATTEST_MESSAGE_BYTES)?;
        codec::check_version("attestation query", query.v)?;
        if !NONCE_BYTES.contains(&query.nonce.len()) {
            let e = serde::de::Error::custom(format!("nonce of {} bytes, expected 16 to 64", query.nonce.len()));
            return Err(crate::codec::DecodeError::Json { what: "attestation query", source: e });
        }
        Ok(query)
    }
}

impl AttestAnswer {
    /// Decodes an answer from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<AttestAnswer, crate::codec::DecodeError> {
        let answer: AttestAnswer = codec::decode_json("attestation answer", bytes, MAX_ATTEST_MESSAGE_BYTES)?;
        codec::check_version("attestation answer", answer.v)?;
        if let Ok(doc) = &answer.result {
            if doc.0.len() > MAX_DOCUMENT_BYTES {
                return Err(crate::codec::DecodeError::TooLarge { what: "attestation document", len: doc.0.len(), limit: MAX_DOCUMENT_BYTES });
            }
        }
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_are_bounded_versioned_and_carry_a_real_nonce() {
        let q = AttestQuery { v: crate::PROTOCOL_VERSION, nonce: vec![7; 32] };
        let bytes = serde_json::to_vec(&q).unwrap();
        assert_eq!(AttestQuery::decode(&bytes).unwrap(), q);
        for bad in [r#"{"v":1,"nonce":"0707"}"#, r#"{"v":2,"nonce":"07070707070707070707070707070707"}"#, r#"{"v":1,"nonce":"zz"}"#, r#"{"v":1}"#] {
            assert!(AttestQuery::decode(bad.as_bytes()).is_err(), "{bad}");
        }
        let answer = AttestAnswer { v: 1, node_id: NodeId::new("node-1").unwrap(), result: Ok(Document(vec![0; MAX_DOCUMENT_BYTES + 1])) };
        assert!(AttestAnswer::decode(&serde_json::to_vec(&answer).unwrap()).is_err(), "oversized documents are refused");
    }
}

/// Why no document came back from [`ask`].
#[cfg(feature = "nats")]
#[derive(Debug, thiserror::Error)]
pub enum AskError {
    /// Nobody listens for the node: it is not running.
    #[error("{0} is not running")]
    NotRunning(NodeId),
    /// No answer in time, or NATS failed.
    #[error("{node}: {detail}")]
    Unavailable {
        /// The node asked.
        node: NodeId,
        /// What happened.
        detail: String,
    },
    /// The answer is malformed, or from another node.
    #[error("{node}'s answer: {detail}")]
    BadAnswer {
        /// The node asked.
        node: NodeId,
        /// What is wrong.
        detail: String,
    },
    /// The node answered that it has no document (hsm mode, bad nonce).
    #[error(transparent)]
    Refused(RequestError),
}

/// Asks `node` for a document answering `nonce`, waiting up to `timeout`.
/// The document is not verified here: that is the asker's job.
#[cfg(feature = "nats")]
pub async fn ask(nats: &async_nats::Client, node: &NodeId, nonce: Vec<u8>, timeout: std::time::Duration) -> Result<Document, AskError> {
    let query = serde_json::to_vec(&AttestQuery { v: crate::PROTOCOL_VERSION, nonce }).expect("queries serialise");
    let unavailable = |detail: String| AskError::Unavailable { node: node.clone(), detail };
    let reply = match tokio::time::timeout(timeout, nats.request(attest_subject(node), query.into())).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) if e.kind() == async_nats::RequestErrorKind::NoResponders => return Err(AskError::NotRunning(node.clone())),
        Ok(Err(e)) => return Err(unavailable(e.to_string())),
        Err(_) => return Err(unavailable(format!("no answer within {timeout:?}"))),
    };
    let bad = |detail: String| AskError::BadAnswer { node: node.clone(), detail };
    let answer = AttestAnswer::decode(&reply.payload).map_err(|e| bad(e.to_string()))?;
    if answer.node_id != *node {
        return Err(bad(format!("{} answered instead", answer.node_id)));
    }
    answer.result.map_err(AskError::Refused)
}
