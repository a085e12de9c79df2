//! The container of a sealed blob, as the host stores it and hands it back.
//! The host cannot open what is inside; the signer reads the container of
//! whatever the host returns, so parsing it is hostile input.
//!
//! Format v1: `b"CSB1"`, key id (u8 length and UTF-8 bytes), nonce (u8
//! length and bytes), ciphertext with its tag. The key id names the key that
//! sealed the blob (`dev:<fingerprint>`, `hsm:<token key label>`), so that
//! keys can be rotated.

const MAGIC: &[u8; 4] = b"CSB1";

/// The parts of a sealed blob.
#[derive(Debug, PartialEq, Eq)]
pub struct SealedBlob<'a> {
    /// The key that sealed it.
    pub key_id: &'a str,
    /// The AEAD nonce (IV).
    pub nonce: &'a [u8],
    /// Ciphertext and tag.
    pub ciphertext: &'a [u8],
}

/// The container is not a v1 sealed blob.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("sealed blob is malformed or of an unknown format")]
pub struct FormatError;

impl<'a> SealedBlob<'a> {
    /// Reads a container.
    pub fn parse(blob: &'a [u8]) -> Result<SealedBlob<'a>, FormatError> {
        let rest = blob.strip_prefix(MAGIC).ok_or(FormatError)?;
        let (key_id, rest) = length_prefixed(rest)?;
        let (nonce, ciphertext) = length_prefixed(rest)?;
        let key_id = std::str::from_utf8(key_id).map_err(|_| FormatError)?;
        Ok(SealedBlob { key_id, nonce, ciphertext })
    }

    /// Writes the container. Key ids and nonces are at most 255 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let key_len = u8::try_from(self.key_id.len()).expect("key ids are short");
        let nonce_len = u8::try_from(self.nonce.len()).expect("nonces are short");
        let mut out = Vec::with_capacity(6 + self.key_id.len() + self.nonce.len() + self.ciphertext.len());
        out.extend_from_slice(MAGIC);
        out.push(key_len);
        out.extend_from_slice(self.key_id.as_bytes());
        out.push(nonce_len);
        out.extend_from_slice(self.nonce);
        out.extend_from_slice(self.ciphertext);
        out
    }
}

fn length_prefixed(bytes: &[u8]) -> Result<(&[u8], &[u8]), FormatError> {
    let (&len, rest) = bytes.split_first().ok_or(FormatError)?;
    let len = usize::from(len);
    if rest.len() < len {
        return Err(FormatError);
    }
    Ok(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_truncation_and_other_formats() {
        let blob = SealedBlob { key_id: "hsm:conclave-seal-1", nonce: &[1; 12], ciphertext: &[2; 40] };
        let bytes = blob.encode();
        assert_eq!(SealedBlob::parse(&bytes), Ok(blob));
        for cut in [0, 3, 4, 5, 10, 24] {
            assert_eq!(SealedBlob::parse(&bytes[..cut]), Err(FormatError), "cut at {cut}");
        }
        let mut other = bytes.clone();
        other[3] = b'2';
        assert_eq!(SealedBlob::parse(&other), Err(FormatError));
        let mut bad_utf8 = bytes;
        bad_utf8[5] = 0xff;
        assert_eq!(SealedBlob::parse(&bad_utf8), Err(FormatError));
    }
}
