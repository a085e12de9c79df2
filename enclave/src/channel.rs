//! The end-to-end channel between enclaves.
//!
//! Each protocol message is sealed for its one recipient with HPKE (RFC 9180)
//! in Auth mode: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305.
//! Auth mode proves the sender's static key, a fresh ephemeral key per message
//! keeps messages unlinkable to each other, and the envelope header is the
//! associated data, so session, round, sender, recipient and sequence number
//! are all bound to the ciphertext. The receiver keeps the highest sequence
//! number seen per sender and session ([`ReplayGuard`]), which refuses
//! replays and reorders.
//!
//! Plaintext: one flag byte (1 = broadcast), the sender's Ed25519 signature
//! over [`EnvelopeHeader::broadcast_signing_bytes`] for a broadcast, then the
//! protocol message.

use crate::identity::{ChannelKem, IdentityError, KxPublic, NodeKeys};
use conclave_proto::envelope::{Envelope, EnvelopeHeader};
use conclave_proto::NodeId;
use ed25519_dalek::{Signature, VerifyingKey};
use hpke::{aead::ChaCha20Poly1305, kdf::HkdfSha256, Deserializable, OpModeR, OpModeS, Serializable};
use std::collections::HashMap;
use zeroize::Zeroizing;

const INFO: &[u8] = b"conclave/e2e/v1";
const ENCAPPED_LEN: usize = 32;

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The ciphertext does not open: tampered, misrouted, or not from the
    /// claimed sender.
    #[error("envelope from {0} does not authenticate")]
    Unauthentic(NodeId),
    /// A sequence number at or below one already seen.
    #[error("envelope from {sender} replayed or reordered (seq {seq}, last {last})")]
    Replay {
        /// Claimed sender.
        sender: NodeId,
        /// Its sequence number.
        seq: u64,
        /// The highest seen.
        last: u64,
    },
    /// The broadcast flag or signature does not match.
    #[error("broadcast from {0} is not signed by its identity key")]
    BadBroadcast(NodeId),
}

/// Seals `message` for `recipient`. For a broadcast the sender signs the
/// message with its identity key inside the ciphertext.
pub fn seal(me: &NodeKeys, header: EnvelopeHeader, recipient: &KxPublic, message: &[u8]) -> Result<Envelope, IdentityError> {
    let mut plaintext = Zeroizing::new(Vec::with_capacity(65 + message.len()));
    if header.broadcast {
        plaintext.push(1);
        plaintext.extend_from_slice(&me.sign(&header.broadcast_signing_bytes(message))?);
    } else {
        plaintext.push(0);
    }
    plaintext.extend_from_slice(message);
    let (sk, pk) = me.kx_pair();
    let mode = OpModeS::<ChannelKem>::Auth((sk.clone(), pk.clone()));
    let (encapped, ciphertext) =
        hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, ChannelKem, _>(&mode, recipient, INFO, &plaintext, &header.aad(), &mut rand_core::OsRng)
            .expect("HPKE seal cannot fail for a valid recipient key");
    let mut sealed = encapped.to_bytes().to_vec();
    sealed.extend_from_slice(&ciphertext);
    Ok(Envelope { header, sealed })
}

/// Opens an envelope addressed to `me` from a sender with keys
/// `sender_kx`/`sender_sign`, returning the protocol message.
pub fn open(me: &NodeKeys, envelope: &Envelope, sender_kx: &KxPublic, sender_sign: &VerifyingKey) -> Result<Zeroizing<Vec<u8>>, ChannelError> {
    let h = &envelope.header;
    let unauthentic = || ChannelError::Unauthentic(h.sender.clone());
    if h.recipient != *me.node_id() || envelope.sealed.len() < ENCAPPED_LEN {
        return Err(unauthentic());
    }
    let (encapped, ciphertext) = envelope.sealed.split_at(ENCAPPED_LEN);
    let encapped = <ChannelKem as hpke::Kem>::EncappedKey::from_bytes(encapped).map_err(|_| unauthentic())?;
    let (sk, _) = me.kx_pair();
    let mode = OpModeR::<ChannelKem>::Auth(sender_kx.clone());
    let plaintext = Zeroizing::new(
        hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, ChannelKem>(&mode, sk, &encapped, INFO, ciphertext, &h.aad()).map_err(|_| unauthentic())?,
    );
    let bad = || ChannelError::BadBroadcast(h.sender.clone());
    match (plaintext.first(), h.broadcast) {
        (Some(0), false) => Ok(Zeroizing::new(plaintext[1..].to_vec())),
        (Some(1), true) if plaintext.len() >= 65 => {
            let sig = Signature::from_bytes(plaintext[1..65].try_into().expect("64 bytes"));
            let message = &plaintext[65..];
            sender_sign.verify_strict(&h.broadcast_signing_bytes(message), &sig).map_err(|_| bad())?;
            Ok(Zeroizing::new(message.to_vec()))
        }
        _ => Err(bad()),
    }
}

/// Highest sequence number seen per sender within one session.
#[derive(Default)]
pub struct ReplayGuard {
    last: HashMap<NodeId, u64>,
}

impl ReplayGuard {
    /// Accepts `seq` from `sender` only if it is above every earlier one.
    /// Call after the envelope authenticated, so forged headers cannot
    /// advance the counter.
    pub fn accept(&mut self, sender: &NodeId, seq: u64) -> Result<(), ChannelError> {
        match self.last.get(sender) {
            Some(&last) if seq <= last => Err(ChannelError::Replay { sender: sender.clone(), seq, last }),
            _ => {
                self.last.insert(sender.clone(), seq);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_proto::ids::SessionKind;
    use conclave_proto::{RequestId, SessionId};

    fn keys(dir: &std::path::Path, id: &str) -> NodeKeys {
        NodeKeys::load_or_create_dev(&dir.join(id), NodeId::new(id).unwrap()).unwrap()
    }

    fn header(from: &str, to: &str, broadcast: bool) -> EnvelopeHeader {
        EnvelopeHeader {
            v: 1,
            session: SessionId::derive(SessionKind::Sign, &RequestId::new("r").unwrap(), 1),
            sender: NodeId::new(from).unwrap(),
            recipient: NodeId::new(to).unwrap(),
            round: 1,
            seq: 1,
            broadcast,
        }
    }

    fn pubs(k: &NodeKeys) -> (KxPublic, VerifyingKey) {
        let id = k.identity();
        (crate::identity::kx_public(&id.kx_key).unwrap(), VerifyingKey::from_bytes(&id.sign_key).unwrap())
    }

    #[test]
    fn sealed_messages_open_only_for_the_recipient_with_the_same_header() {
        let d = tempfile::tempdir().unwrap();
        let (a, b, c) = (keys(d.path(), "a"), keys(d.path(), "b"), keys(d.path(), "c"));
        let (a_kx, a_sign) = pubs(&a);
        let (b_kx, _) = pubs(&b);
        for broadcast in [false, true] {
            let env = seal(&a, header("a", "b", broadcast), &b_kx, b"round one").unwrap();
            assert_eq!(&**open(&b, &env, &a_kx, &a_sign).unwrap(), b"round one");
            // Another node cannot open it, even if the host re-addresses it.
            let mut redirected = env.clone();
            redirected.header.recipient = NodeId::new("c").unwrap();
            assert!(open(&c, &redirected, &a_kx, &a_sign).is_err());
            // Any header change or flipped ciphertext byte breaks it.
            let mut h = env.clone();
            h.header.seq = 2;
            assert_eq!(open(&b, &h, &a_kx, &a_sign).unwrap_err(), ChannelError::Unauthentic(NodeId::new("a").unwrap()));
            let mut t = env.clone();
            *t.sealed.last_mut().unwrap() ^= 0x80;
            assert!(open(&b, &t, &a_kx, &a_sign).is_err());
        }
        // A message claiming to be from c but sealed by a does not authenticate as c's.
        let (c_kx, c_sign) = pubs(&c);
        let mut forged = seal(&a, header("a", "b", false), &b_kx, b"x").unwrap();
        forged.header.sender = NodeId::new("c").unwrap();
        assert!(open(&b, &forged, &c_kx, &c_sign).is_err());
    }

    #[test]
    fn replay_guard_refuses_repeats_and_reorders() {
        let mut g = ReplayGuard::default();
        let a = NodeId::new("a").unwrap();
        g.accept(&a, 1).unwrap();
        g.accept(&a, 3).unwrap();
        assert!(g.accept(&a, 3).is_err());
        assert!(g.accept(&a, 2).is_err());
        g.accept(&NodeId::new("b").unwrap(), 1).unwrap();
    }
}
