//! Node-to-node protocol messages. The host routes an [`Envelope`] by its
//! header and cannot read `sealed`: that is encrypted and authenticated end to
//! end between the two enclaves, with [`EnvelopeHeader::aad`] as associated
//! data, so a header that is altered, replayed into another session, or
//! redirected to another recipient fails to open.

use crate::codec;
use crate::{NodeId, SessionId};
use serde::{Deserialize, Serialize};

/// Largest envelope (CGGMP21 aux-info rounds carry large ZK proofs).
pub const MAX_ENVELOPE_BYTES: usize = 8 * 1024 * 1024;

/// The routing header, bound into the ciphertext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeHeader {
    /// Must be [`crate::PROTOCOL_VERSION`].
    pub v: u16,
    /// The session this message belongs to.
    pub session: SessionId,
    /// Who sent it.
    pub sender: NodeId,
    /// Who may open it.
    pub recipient: NodeId,
    /// Protocol round, checked against the decrypted message.
    pub round: u16,
    /// Sender's message counter within the session, strictly increasing; a
    /// broadcast has one number for all its copies.
    pub seq: u64,
    /// Whether this is a copy of a broadcast (then the plaintext carries the
    /// sender's identity signature).
    pub broadcast: bool,
}

impl EnvelopeHeader {
    /// The associated data for the end-to-end encryption.
    pub fn aad(&self) -> Vec<u8> {
        let mut out = b"conclave/envelope/v1".to_vec();
        out.extend_from_slice(&self.v.to_be_bytes());
        out.extend_from_slice(self.session.as_bytes());
        for id in [&self.sender, &self.recipient] {
            out.push(id.as_str().len() as u8);
            out.extend_from_slice(id.as_str().as_bytes());
        }
        out.extend_from_slice(&self.round.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.push(u8::from(self.broadcast));
        out
    }

    /// What the sender signs with its identity key for a broadcast: the same
    /// bytes for every recipient's copy, so copies can be compared.
    pub fn broadcast_signing_bytes(&self, payload: &[u8]) -> Vec<u8> {
        let mut out = b"conclave/broadcast/v1".to_vec();
        out.extend_from_slice(self.session.as_bytes());
        out.push(self.sender.as_str().len() as u8);
        out.extend_from_slice(self.sender.as_str().as_bytes());
        out.extend_from_slice(&self.round.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }
}

/// A sealed protocol message on its way between two enclaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Routing header (authenticated, not secret).
    #[serde(flatten)]
    pub header: EnvelopeHeader,
    /// HPKE encapsulated key followed by the ciphertext.
    #[serde(with = "codec::b64")]
    pub sealed: Vec<u8>,
}

impl Envelope {
    /// Decodes an envelope from untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, codec::DecodeError> {
        let e: Envelope = codec::decode_json("envelope", bytes, MAX_ENVELOPE_BYTES)?;
        codec::check_version("envelope", e.header.v)?;
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ids::SessionKind, RequestId};

    fn header() -> EnvelopeHeader {
        EnvelopeHeader {
            v: 1,
            session: SessionId::derive(SessionKind::Sign, &RequestId::new("r").unwrap(), 1),
            sender: NodeId::new("a").unwrap(),
            recipient: NodeId::new("b").unwrap(),
            round: 2,
            seq: 7,
            broadcast: false,
        }
    }

    #[test]
    fn every_header_field_changes_the_aad() {
        let base = header().aad();
        let mut h = header();
        h.recipient = NodeId::new("c").unwrap();
        assert_ne!(h.aad(), base);
        let mut h = header();
        h.seq = 8;
        assert_ne!(h.aad(), base);
        let mut h = header();
        h.round = 3;
        assert_ne!(h.aad(), base);
        let mut h = header();
        h.broadcast = true;
        assert_ne!(h.aad(), base);
        let mut h = header();
        h.session = SessionId::derive(SessionKind::Sign, &RequestId::new("r").unwrap(), 2);
        assert_ne!(h.aad(), base);
        // Length prefixes keep ("ab","c") and ("a","bc") apart.
        let mut h1 = header();
        h1.sender = NodeId::new("ab").unwrap();
        h1.recipient = NodeId::new("c").unwrap();
        let mut h2 = header();
        h2.sender = NodeId::new("a").unwrap();
        h2.recipient = NodeId::new("bc").unwrap();
        assert_ne!(h1.aad(), h2.aad());
    }
}
