//! Results, published once per request on the result stream.

use crate::codec;
use crate::{NodeId, RequestError, RequestId, Scheme, WalletId};
use serde::{Deserialize, Serialize};

/// Largest result message.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;

/// The answer to one request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestResult {
    /// Must be [`crate::PROTOCOL_VERSION`].
    pub v: u16,
    /// The request this answers.
    pub request_id: RequestId,
    /// The node that published it.
    pub reported_by: NodeId,
    /// Success or failure.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// Success or failure, tagged by `status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// `{"status":"ok","result":{"statement":"...","endorsements":[...]}}`:
    /// what was produced, as the signers state and sign it.
    Ok {
        /// The signed statement (its `result` is a [`Completed`]).
        result: crate::statement::Endorsed,
    },
    /// `{"status":"error","error":{"code":...,"reason":...}}`
    Error {
        /// What went wrong.
        error: RequestError,
    },
}

/// What a successful request produced, tagged by `kind`; carried inside a
/// signed [`crate::statement::Statement`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Completed {
    /// A new key.
    Keygen(KeygenResult),
    /// A signature.
    Sign(SignResult),
    /// A key moved to a new committee or threshold: the wallet's new record.
    Reshare(KeygenResult),
}

/// A generated key: everything public about a wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeygenResult {
    /// The wallet.
    pub wallet: WalletId,
    /// Its scheme.
    pub scheme: Scheme,
    /// ECDSA: 33-byte compressed SEC1; EdDSA: 32-byte RFC 8032 encoding.
    #[serde(with = "codec::hex_bytes")]
    pub public_key: Vec<u8>,
    /// ECDSA: BIP-32 serialisation of the root public key and chain code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xpub: Option<String>,
    /// Share version (1 after keygen, +1 per reshare).
    pub version: u32,
    /// Signers needed.
    pub threshold: u16,
    /// Share holders, in protocol index order.
    pub committee: Vec<NodeId>,
}

/// A signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignResult {
    /// The wallet.
    pub wallet: WalletId,
    /// Its scheme.
    pub scheme: Scheme,
    /// ECDSA: r||s (low-S); EdDSA: R||S. 64 bytes either way.
    #[serde(with = "codec::hex_bytes")]
    pub signature: Vec<u8>,
    /// ECDSA: the recovery id (0 or 1) for `public_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_id: Option<u8>,
    /// The key the signature verifies under: the derived child key when a
    /// path was given.
    #[serde(with = "codec::hex_bytes")]
    pub public_key: Vec<u8>,
    /// The derivation path used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<u32>,
    /// The nodes that took part.
    pub signers: Vec<NodeId>,
    /// The share version that signed.
    pub version: u32,
}

impl RequestResult {
    /// Decodes a result from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<RequestResult, codec::DecodeError> {
        let r: RequestResult = codec::decode_json("result", bytes, MAX_RESULT_BYTES)?;
        codec::check_version("result", r.v)?;
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    #[test]
    fn error_results_have_the_documented_shape() {
        let r = RequestResult {
            v: 1,
            request_id: RequestId::new("r").unwrap(),
            reported_by: NodeId::new("node-1").unwrap(),
            outcome: Outcome::Error { error: RequestError::new(ErrorCode::Unauthorized, "unknown initiator") },
        };
        let v: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(v["status"], "error");
        assert_eq!(v["error"]["code"], "unauthorized");
        assert_eq!(RequestResult::decode(&serde_json::to_vec(&r).unwrap()).unwrap(), r);
    }
}
