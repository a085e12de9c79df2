//! Identifiers. Each is a newtype that can only hold a valid value, so that a
//! wallet id can never be passed where a node id is expected, and so that an
//! id is always safe to use in a NATS subject, a registry key or a file name.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} {value:?}: expected 1 to {max} characters of [A-Za-z0-9_-]")]
pub struct IdError {
    kind: &'static str,
    value: String,
    max: usize,
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Longest accepted value.
            pub const MAX_LEN: usize = $max;

            /// Validates and wraps `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                let ok = !value.is_empty()
                    && value.len() <= $max
                    && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if ok {
                    Ok(Self(value))
                } else {
                    Err(IdError { kind: $kind, value: value.chars().take(80).collect(), max: $max })
                }
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
    };
}

string_id!(
    /// A signer node, e.g. `node-1`. Unique within a cluster.
    NodeId, "node id", 32
);
string_id!(
    /// A wallet: one key per scheme, named by the client.
    WalletId, "wallet id", 64
);
string_id!(
    /// A client request, and its idempotency key: the same request id is
    /// acted on at most once, and asking again returns the first result.
    RequestId, "request id", 64
);

/// A signature scheme Conclave runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    /// ECDSA on secp256k1 (CGGMP21).
    Ecdsa,
    /// EdDSA on ed25519 (FROST, RFC 9591).
    Eddsa,
}

impl Scheme {
    /// The lower-case name used on the wire, in subjects and in file names.
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Ecdsa => "ecdsa",
            Scheme::Eddsa => "eddsa",
        }
    }
}

impl fmt::Display for Scheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Scheme {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        match s {
            "ecdsa" => Ok(Scheme::Ecdsa),
            "eddsa" => Ok(Scheme::Eddsa),
            _ => Err(IdError { kind: "scheme (ecdsa or eddsa)", value: s.into(), max: 5 }),
        }
    }
}

macro_rules! digest_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        pub struct $name(#[serde(with = "crate::codec::hex_array")] [u8; 16]);

        impl $name {
            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 16] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self)
            }
        }
    };
}

digest_id!(
    /// One run of one protocol. Derived, never chosen: every participant
    /// computes the same id from what it was asked to do, and no two runs share
    /// one (it doubles as the protocol's execution id).
    SessionId
);
digest_id!(
    /// A committee: the ordered set of nodes that share keys. Wallets of the
    /// same committee share its ECDSA auxiliary info.
    CommitteeId
);

digest_id!(
    /// A presignature pool: one wallet's key (scheme and version) and one
    /// signer set of its committee (root key). Its presignatures (ECDSA) or
    /// nonces (EdDSA) serve only that set.
    PoolId
);

impl PoolId {
    /// The pool of `wallet`'s `scheme` key at `version` for `signers` (in
    /// committee order), derived along `path` (empty: the root key, whose
    /// pool ids are those of before paths could be declared).
    pub fn of(wallet: &WalletId, scheme: Scheme, version: u32, signers: &[NodeId], path: &[u32]) -> Self {
        let version = version.to_be_bytes();
        let mut parts: Vec<&[u8]> = vec![b"conclave/presignature-pool/v1", wallet.as_str().as_bytes(), scheme.as_str().as_bytes(), &version];
        parts.extend(signers.iter().map(|m| m.as_str().as_bytes()));
        let path: Vec<u8> = path.iter().flat_map(|i| i.to_be_bytes()).collect();
        if !path.is_empty() {
            parts.push(b"path");
            parts.push(&path);
        }
        PoolId(truncated_hash(&parts))
    }
}

fn truncated_hash(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    let full = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// What a session does; part of its derived id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionKind {
    /// Distributed key generation.
    Keygen,
    /// ECDSA auxiliary info (Paillier keys) for a committee.
    AuxInfo,
    /// Threshold signing.
    Sign,
    /// Resharing a key to a new committee or threshold.
    Reshare,
    /// A reshare's last step: every new member says it stored its share.
    ReshareAck,
    /// Renewing a committee's aux info, last step: every member says it
    /// stored the new aux info.
    AuxAck,
    /// Making one presignature of a pool.
    Presign,
    /// A presignature's last step: every signer of the set says it stored it.
    PresignAck,
    /// Before a sign request under a velocity limit: the signers pool what
    /// each counted for the wallet, so that every signature is counted
    /// whichever quorum signed it.
    Tally,
}

impl SessionKind {
    /// Every kind (an attempt that ends ends its sessions of each).
    pub const ALL: [SessionKind; 9] = [
        SessionKind::Keygen,
        SessionKind::AuxInfo,
        SessionKind::Sign,
        SessionKind::Reshare,
        SessionKind::ReshareAck,
        SessionKind::AuxAck,
        SessionKind::Presign,
        SessionKind::PresignAck,
        SessionKind::Tally,
    ];
}

impl SessionId {
    /// The session that runs `kind` for `request` in attempt `attempt`.
    pub fn derive(kind: SessionKind, request: &RequestId, attempt: u32) -> Self {
        let kind = match kind {
            SessionKind::Keygen => b"keygen".as_slice(),
            SessionKind::AuxInfo => b"aux-info",
            SessionKind::Sign => b"sign",
            SessionKind::Reshare => b"reshare",
            SessionKind::ReshareAck => b"reshare-ack",
            SessionKind::AuxAck => b"aux-ack",
            SessionKind::Presign => b"presign",
            SessionKind::PresignAck => b"presign-ack",
            SessionKind::Tally => b"tally",
        };
        SessionId(truncated_hash(&[b"conclave/session/v1", kind, request.as_str().as_bytes(), &attempt.to_be_bytes()]))
    }
}

impl CommitteeId {
    /// The id of a committee given its members in canonical (sorted) order.
    pub fn of(members: &[NodeId]) -> Self {
        let mut parts: Vec<&[u8]> = vec![b"conclave/committee/v1"];
        parts.extend(members.iter().map(|m| m.as_str().as_bytes()));
        CommitteeId(truncated_hash(&parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_reject_subject_and_path_metacharacters() {
        for bad in ["", "a.b", "a/b", "..", "a b", "a*", "a>", &"x".repeat(65)] {
            assert!(WalletId::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(WalletId::new("treasury-01_A").is_ok());
        assert!(NodeId::new("x".repeat(33)).is_err());
    }

    #[test]
    fn ids_are_validated_when_deserialised() {
        assert!(serde_json::from_str::<NodeId>("\"node-1\"").is_ok());
        assert!(serde_json::from_str::<NodeId>("\"node.1\"").is_err());
    }

    #[test]
    fn session_ids_separate_kind_request_and_attempt() {
        let r = RequestId::new("r1").unwrap();
        let a = SessionId::derive(SessionKind::Sign, &r, 1);
        assert_ne!(a, SessionId::derive(SessionKind::Sign, &r, 2));
        assert_ne!(a, SessionId::derive(SessionKind::Keygen, &r, 1));
        assert_ne!(a, SessionId::derive(SessionKind::Sign, &RequestId::new("r2").unwrap(), 1));
        assert_eq!(a, SessionId::derive(SessionKind::Sign, &r, 1));
    }
}
