//! Hex and base64 encodings for byte fields in JSON, and bounded JSON decoding.

use serde::de::DeserializeOwned;

/// Why bytes from outside could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// The input is larger than the limit for its kind.
    #[error("{what} of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// What was being decoded.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// The input is not valid JSON of the expected shape.
    #[error("malformed {what}: {source}")]
    Json {
        /// What was being decoded.
        what: &'static str,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// The input names a protocol version this build does not speak.
    #[error("unsupported {what} version {got} (this node speaks {})", crate::PROTOCOL_VERSION)]
    Version {
        /// What was being decoded.
        what: &'static str,
        /// The version it claimed.
        got: u16,
    },
}

impl DecodeError {
    /// The wire error code for this decode failure.
    pub fn code(&self) -> crate::ErrorCode {
        match self {
            DecodeError::TooLarge { .. } => crate::ErrorCode::TooLarge,
            DecodeError::Json { .. } => crate::ErrorCode::Malformed,
            DecodeError::Version { .. } => crate::ErrorCode::UnsupportedVersion,
        }
    }
}

/// Decodes JSON from untrusted bytes after checking their size.
pub fn decode_json<T: DeserializeOwned>(what: &'static str, bytes: &[u8], limit: usize) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge { what, len: bytes.len(), limit });
    }
    serde_json::from_slice(bytes).map_err(|source| DecodeError::Json { what, source })
}

/// Checks a decoded version field.
pub fn check_version(what: &'static str, got: u16) -> Result<(), DecodeError> {
    if got == crate::PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(DecodeError::Version { what, got })
    }
}

/// `#[serde(with = "conclave_proto::codec::b64")]` for `Vec<u8>` fields that
/// carry opaque binary (ciphertext, sealed blobs).
pub mod b64 {
    use base64::{engine::general_purpose::STANDARD, Engine};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises bytes as standard base64.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    /// Parses standard base64.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with = "conclave_proto::codec::hex_bytes")]` for `Vec<u8>` fields
/// that people read (messages, digests).
pub mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises bytes as lower-case hex.
    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    /// Parses hex (either case).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

/// `#[serde(with = "conclave_proto::codec::hex_array")]` for fixed-size keys
/// and signatures.
pub mod hex_array {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialises a fixed-size array as lower-case hex.
    pub fn serialize<S: Serializer, const N: usize>(bytes: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    /// Parses hex of exactly `N` bytes.
    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(d: D) -> Result<[u8; N], D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; N];
        hex::decode_to_slice(&s, &mut out).map_err(|_| serde::de::Error::custom(format!("expected {N} bytes as {} hex digits", 2 * N)))?;
        Ok(out)
    }
}
