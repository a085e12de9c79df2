//! Client requests. A request is a JSON body, carried as a string inside a
//! [`SignedRequest`] together with the initiator's Ed25519 signature over
//! [`SignedRequest::signing_bytes`]. Signing the exact string avoids any JSON
//! canonicalisation, so a client in any language can produce it.

use crate::codec::{self, DecodeError};
use crate::{NodeId, RequestId, Scheme, WalletId};
use serde::{Deserialize, Serialize};

/// Largest request the cluster accepts, in bytes on the wire.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// Largest message an EdDSA request may ask to sign.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
/// Largest committee.
pub const MAX_COMMITTEE: usize = 16;
/// Deepest derivation path.
pub const MAX_PATH_DEPTH: usize = 16;
/// Domain separation for the initiator's signature.
pub const REQUEST_SIGNING_CONTEXT: &[u8] = b"conclave/request/v1\n";

/// What the client asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RequestBody {
    /// Generate a new key for `wallet` shared by `committee`.
    Keygen(KeygenRequest),
    /// Sign with an existing key.
    Sign(SignRequest),
    /// Move an existing key to a new committee or threshold.
    Reshare(ReshareRequest),
}

impl RequestBody {
    /// The request id (idempotency key).
    pub fn request_id(&self) -> &RequestId {
        match self {
            RequestBody::Keygen(r) => &r.request_id,
            RequestBody::Sign(r) => &r.request_id,
            RequestBody::Reshare(r) => &r.request_id,
        }
    }

    /// The wallet the request concerns.
    pub fn wallet(&self) -> (&WalletId, Scheme) {
        match self {
            RequestBody::Keygen(r) => (&r.wallet, r.scheme),
            RequestBody::Sign(r) => (&r.wallet, r.scheme),
            RequestBody::Reshare(r) => (&r.wallet, r.scheme),
        }
    }

    /// When the initiator issued it (Unix milliseconds).
    pub fn issued_at_ms(&self) -> u64 {
        match self {
            RequestBody::Keygen(r) => r.issued_at_ms,
            RequestBody::Sign(r) => r.issued_at_ms,
            RequestBody::Reshare(r) => r.issued_at_ms,
        }
    }

    /// Checks ranges that the type system does not.
    pub fn validate(&self) -> Result<(), crate::RequestError> {
        use crate::{ErrorCode::Malformed, RequestError};
        match self {
            RequestBody::Keygen(k) => committee(&k.committee, k.threshold, k.scheme)?,
            RequestBody::Reshare(r) => {
                committee(&r.new_committee, r.new_threshold, r.scheme)?;
                committee(&r.committee, r.threshold, r.scheme)?;
                // With one signer every new member would be dealt the whole
                // key (a polynomial of degree 0).
                if r.new_threshold < 2 {
                    return Err(RequestError::new(Malformed, "a reshared key needs a threshold of at least 2: with 1, every member would hold the whole key"));
                }
                if r.version == 0 {
                    return Err(RequestError::new(Malformed, "version 0: keys start at version 1"));
                }
                if r.public_key.is_empty() || r.public_key.len() > 65 {
                    return Err(RequestError::new(Malformed, format!("public key of {} bytes", r.public_key.len())));
                }
            }
            RequestBody::Sign(s) => {
                if s.version == 0 {
                    return Err(RequestError::new(Malformed, "version 0: keys start at version 1"));
                }
                match (&s.payload, s.scheme) {
                    (SignPayload::Digest(d), Scheme::Ecdsa) if d.len() != 32 => {
                        return Err(RequestError::new(Malformed, format!("digest of {} bytes, expected 32", d.len())));
                    }
                    (SignPayload::Digest(m) | SignPayload::Message(m) | SignPayload::EthEip1559(m), _) if m.len() > MAX_MESSAGE_BYTES => {
                        return Err(RequestError::new(Malformed, format!("message of {} bytes exceeds {MAX_MESSAGE_BYTES}", m.len())));
                    }
                    (SignPayload::EthEip1559(_), Scheme::Eddsa) => {
                        return Err(RequestError::new(crate::ErrorCode::Unsupported, "Ethereum transactions are signed by ECDSA wallets"));
                    }
                    (SignPayload::EthEip1559(tx), Scheme::Ecdsa) => {
                        crate::eth::decode_unsigned(tx).map_err(|e| RequestError::new(e.code(), format!("eth_eip1559 payload: {e}")))?;
                    }
                    _ => {}
                }
                if let Some(t) = s.timeout_ms.filter(|t| !(MIN_TIMEOUT_MS..=MAX_TIMEOUT_MS).contains(t)) {
                    return Err(RequestError::new(Malformed, format!("timeout_ms {t} is outside {MIN_TIMEOUT_MS}..={MAX_TIMEOUT_MS}")));
                }
                if s.path.len() > MAX_PATH_DEPTH {
                    return Err(RequestError::new(Malformed, format!("derivation path deeper than {MAX_PATH_DEPTH}")));
                }
                if let Some(i) = s.path.iter().find(|i| **i >= 1 << 31) {
                    return Err(RequestError::new(Malformed, format!("path index {i} is hardened; only non-hardened derivation is possible on a shared key")));
                }
                if let Some(signers) = &s.signers {
                    let mut sorted = signers.clone();
                    sorted.sort();
                    sorted.dedup();
                    if sorted.len() != signers.len() || signers.is_empty() {
                        return Err(RequestError::new(Malformed, "signers must be distinct and non-empty"));
                    }
                }
            }
        }
        Ok(())
    }
}

/// A committee and threshold as keygen and resharing accept them: 2 to
/// [`MAX_COMMITTEE`] distinct nodes, 1 to n signers (2 for ECDSA).
fn committee(nodes: &[NodeId], threshold: u16, scheme: Scheme) -> Result<(), crate::RequestError> {
    use crate::{ErrorCode::Malformed, RequestError};
    let n = nodes.len();
    if !(2..=MAX_COMMITTEE).contains(&n) {
        return Err(RequestError::new(Malformed, format!("committee of {n} nodes (2 to {MAX_COMMITTEE})")));
    }
    let mut sorted = nodes.to_vec();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != n {
        return Err(RequestError::new(Malformed, "committee names a node twice"));
    }
    if threshold < 1 || usize::from(threshold) > n {
        return Err(RequestError::new(Malformed, format!("threshold {threshold} of {n} nodes")));
    }
    if scheme == Scheme::Ecdsa && threshold < 2 {
        return Err(RequestError::new(Malformed, "ECDSA (CGGMP21) needs a threshold of at least 2"));
    }
    Ok(())
}

/// Parses a BIP-32 path such as `m/0/7`: non-hardened indexes only (a
/// hardened child cannot be derived from a shared key), at most
/// [`MAX_PATH_DEPTH`] deep; `m` is the root.
pub fn parse_path(s: &str) -> Result<Vec<u32>, String> {
    let rest = s.strip_prefix('m').ok_or_else(|| format!("path {s:?} must start with m"))?;
    let path = rest
        .split('/')
        .skip(1)
        .map(|part| {
            if part.ends_with('\'') || part.ends_with('h') || part.ends_with('H') {
                return Err(format!("hardened index {part:?}: only non-hardened derivation works on a threshold key"));
            }
            part.parse::<u32>().ok().filter(|i| *i < 1 << 31).ok_or_else(|| format!("bad path index {part:?}"))
        })
        .collect::<Result<Vec<u32>, String>>()?;
    if !rest.is_empty() && !rest.starts_with('/') {
        return Err(format!("path {s:?}: indexes follow m/"));
    }
    if path.len() > MAX_PATH_DEPTH {
        return Err(format!("path {s:?} is deeper than {MAX_PATH_DEPTH}"));
    }
    Ok(path)
}

/// Move a wallet's key to a new committee or threshold (resharing). It
/// names the key as the initiator knows it (public key, committee,
/// threshold, version, from the wallet record): a node that holds no share
/// yet takes these facts from the signed request, and every node that does
/// holds the request to them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReshareRequest {
    /// Idempotency key.
    pub request_id: RequestId,
    /// The wallet.
    pub wallet: WalletId,
    /// Which of its keys.
    pub scheme: Scheme,
    /// The key's public key (as in its wallet record).
    #[serde(with = "crate::codec::hex_bytes")]
    pub public_key: Vec<u8>,
    /// ECDSA: the key's xpub (as in its wallet record), whose chain code
    /// the new shares keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xpub: Option<String>,
    /// The version being replaced.
    pub version: u32,
    /// Its committee, in protocol index order (as in the wallet record).
    pub committee: Vec<NodeId>,
    /// Its threshold.
    pub threshold: u16,
    /// The new committee. Order does not matter.
    pub new_committee: Vec<NodeId>,
    /// The new threshold.
    pub new_threshold: u16,
    /// Unix milliseconds when issued; stale requests are refused.
    pub issued_at_ms: u64,
}

/// Generate a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeygenRequest {
    /// Idempotency key.
    pub request_id: RequestId,
    /// The wallet to create.
    pub wallet: WalletId,
    /// Which scheme.
    pub scheme: Scheme,
    /// How many signers it takes to sign (t of n).
    pub threshold: u16,
    /// The nodes that will hold shares (n). Order does not matter.
    pub committee: Vec<NodeId>,
    /// Unix milliseconds when issued; stale requests are refused.
    pub issued_at_ms: u64,
}

/// What to sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignPayload {
    /// A 32-byte digest, signed as is (ECDSA). For EdDSA, the bytes are the
    /// message.
    Digest(#[serde(with = "codec::hex_bytes")] Vec<u8>),
    /// A message: hashed with SHA-256 for ECDSA, signed as is for EdDSA.
    Message(#[serde(with = "codec::hex_bytes")] Vec<u8>),
    /// An unsigned Ethereum EIP-1559 transaction (`0x02 || rlp(...)`,
    /// [`crate::eth`]), ECDSA only: the signer decodes it (so that policy
    /// rules see its chain, destination and value), hashes it with
    /// Keccak-256 itself, and the result's `recovery_id` is its y-parity.
    EthEip1559(#[serde(with = "codec::hex_bytes")] Vec<u8>),
}

impl SignPayload {
    /// The payload's kind, as policy rules name it.
    pub fn kind(&self) -> crate::policy::PayloadKind {
        use crate::policy::PayloadKind;
        match self {
            SignPayload::Digest(_) => PayloadKind::Digest,
            SignPayload::Message(_) => PayloadKind::Message,
            SignPayload::EthEip1559(_) => PayloadKind::EthEip1559,
        }
    }
}

/// The shortest deadline a signing request may ask for.
pub const MIN_TIMEOUT_MS: u64 = 1_000;
/// The longest deadline a signing request may ask for.
pub const MAX_TIMEOUT_MS: u64 = 300_000;

/// Sign with a wallet's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    /// Idempotency key.
    pub request_id: RequestId,
    /// The wallet whose key signs.
    pub wallet: WalletId,
    /// Which of the wallet's keys.
    pub scheme: Scheme,
    /// The key version the initiator expects (from the wallet's signed
    /// record): a signer whose share is of another version refuses
    /// (`version_mismatch`), so an old share served again by a host, or
    /// one replaced by a reshare, never signs.
    pub version: u32,
    /// What to sign.
    pub payload: SignPayload,
    /// Non-hardened BIP-32 derivation path (ECDSA only); empty for the root key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<u32>,
    /// Exactly these nodes sign, if given (they must be `threshold` members
    /// of the committee); otherwise the cluster picks ready members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signers: Option<Vec<NodeId>>,
    /// How long the cluster may take, in milliseconds (default: the nodes'
    /// `sign_deadline_ms`, 60 s; at most 300 000). Failover to another
    /// quorum happens within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Unix milliseconds when issued; stale requests are refused.
    pub issued_at_ms: u64,
}

/// A request as published: the body as a JSON string, signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedRequest {
    /// Must be [`crate::PROTOCOL_VERSION`].
    pub v: u16,
    /// The [`RequestBody`] as a JSON string, exactly as signed.
    pub body: String,
    /// The initiator's Ed25519 public key.
    #[serde(with = "codec::hex_array")]
    pub initiator: [u8; 32],
    /// Ed25519 signature over [`SignedRequest::signing_bytes`].
    #[serde(with = "codec::hex_array")]
    pub signature: [u8; 64],
}

impl SignedRequest {
    /// The bytes the initiator signs: a fixed context string followed by the
    /// body string.
    pub fn signing_bytes(body: &str) -> Vec<u8> {
        [REQUEST_SIGNING_CONTEXT, body.as_bytes()].concat()
    }

    /// Decodes a request from untrusted bytes: size, JSON shape, version, and
    /// the body's own shape and ranges. The signature is *not* checked here;
    /// the signer does that.
    pub fn decode(bytes: &[u8]) -> Result<(SignedRequest, RequestBody), DecodeError> {
        let req: SignedRequest = codec::decode_json("request", bytes, MAX_REQUEST_BYTES)?;
        codec::check_version("request", req.v)?;
        let body = req.parse_body()?;
        Ok((req, body))
    }

    /// SHA-256 of the signed body string: what statements answer and
    /// approvals approve.
    pub fn body_hash(&self) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(self.body.as_bytes()).into()
    }

    /// Parses the signed body string.
    pub fn parse_body(&self) -> Result<RequestBody, DecodeError> {
        codec::decode_json("request body", self.body.as_bytes(), MAX_REQUEST_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign_body() -> RequestBody {
        RequestBody::Sign(SignRequest {
            request_id: RequestId::new("r-1").unwrap(),
            wallet: WalletId::new("w").unwrap(),
            scheme: Scheme::Ecdsa,
            version: 1,
            payload: SignPayload::Digest(vec![7; 32]),
            path: vec![0, 5],
            signers: None,
            timeout_ms: None,
            issued_at_ms: 1,
        })
    }

    #[test]
    fn body_round_trips_with_documented_field_names() {
        let json = serde_json::to_string(&sign_body()).unwrap();
        assert!(json.contains("\"kind\":\"sign\""), "{json}");
        assert!(json.contains("\"payload\":{\"digest\":\"0707"), "{json}");
        assert_eq!(serde_json::from_str::<RequestBody>(&json).unwrap(), sign_body());
    }

    #[test]
    fn decode_refuses_oversized_unknown_version_and_unknown_fields() {
        let big = vec![b' '; MAX_REQUEST_BYTES + 1];
        assert!(matches!(SignedRequest::decode(&big), Err(DecodeError::TooLarge { .. })));
        let body = serde_json::to_string(&sign_body()).unwrap();
        let req = SignedRequest { v: 9, body, initiator: [0; 32], signature: [0; 64] };
        let bytes = serde_json::to_vec(&req).unwrap();
        assert!(matches!(SignedRequest::decode(&bytes), Err(DecodeError::Version { got: 9, .. })));
        let extra = br#"{"kind":"sign","surprise":1}"#;
        assert!(serde_json::from_slice::<RequestBody>(extra).is_err());
    }

    #[test]
    fn paths_parse_and_hardened_indexes_are_refused() {
        assert_eq!(parse_path("m").unwrap(), Vec::<u32>::new());
        assert_eq!(parse_path("m/0/7").unwrap(), vec![0, 7]);
        for bad in ["m/0'/7", "m/1h", "0/1", "m/2147483648", "m0", "m/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16/17"] {
            assert!(parse_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn validate_refuses_bad_ranges() {
        let mut b = sign_body();
        if let RequestBody::Sign(s) = &mut b {
            s.path = vec![1 << 31];
        }
        assert_eq!(b.validate().unwrap_err().code, crate::ErrorCode::Malformed);
        let k = RequestBody::Keygen(KeygenRequest {
            request_id: RequestId::new("k").unwrap(),
            wallet: WalletId::new("w").unwrap(),
            scheme: Scheme::Eddsa,
            threshold: 4,
            committee: vec![NodeId::new("a").unwrap(), NodeId::new("b").unwrap(), NodeId::new("c").unwrap()],
            issued_at_ms: 1,
        });
        assert!(k.validate().is_err());
    }

    #[test]
    fn reshare_requests_need_sane_committees_a_version_and_two_new_signers() {
        let n = |s: &str| NodeId::new(s).unwrap();
        let good = ReshareRequest {
            request_id: RequestId::new("r").unwrap(),
            wallet: WalletId::new("w").unwrap(),
            scheme: Scheme::Eddsa,
            public_key: vec![1; 32],
            xpub: None,
            version: 1,
            committee: vec![n("a"), n("b"), n("c")],
            threshold: 2,
            new_committee: vec![n("a"), n("b"), n("c"), n("d")],
            new_threshold: 3,
            issued_at_ms: 1,
        };
        assert!(RequestBody::Reshare(good.clone()).validate().is_ok());
        for bad in [
            ReshareRequest { new_threshold: 1, ..good.clone() },
            ReshareRequest { new_threshold: 5, ..good.clone() },
            ReshareRequest { new_committee: vec![n("a"), n("a"), n("b")], ..good.clone() },
            ReshareRequest { version: 0, ..good.clone() },
            ReshareRequest { public_key: vec![], ..good.clone() },
            ReshareRequest { threshold: 4, ..good.clone() },
        ] {
            assert!(RequestBody::Reshare(bad.clone()).validate().is_err(), "{bad:?}");
        }
    }
}
