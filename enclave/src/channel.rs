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
//! Plaintext: one flag byte, then for a broadcast the sender's Ed25519
//! signature over [`EnvelopeHeader::broadcast_signing_bytes`], then the
//! protocol message. Flags: 0 = to this recipient only; 1 = broadcast
//! signed by the identity key (64 bytes); 2 = broadcast signed by a run key
//! (its certificate, [`RunKey::to_bytes`], then 64 bytes).

use crate::identity::{ChannelKem, IdentityError, KxPublic, NodeKeys};
use conclave_proto::envelope::{Envelope, EnvelopeHeader};
use conclave_proto::run_key::{NodeSignature, RunKey, RUN_KEY_BYTES};
use conclave_proto::NodeId;
use ed25519_dalek::VerifyingKey;
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
    #[error("broadcast from {0} is not signed by its identity key or a run key it certified")]
    BadBroadcast(NodeId),
}

/// Seals `message` for `recipient`. For a broadcast the sender signs the
/// message ([`NodeKeys::sign`]) inside the ciphertext.
pub fn seal(me: &NodeKeys, header: EnvelopeHeader, recipient: &KxPublic, message: &[u8]) -> Result<Envelope, IdentityError> {
    let mut plaintext = Zeroizing::new(Vec::with_capacity(1 + RUN_KEY_BYTES + 64 + message.len()));
    match header.broadcast.then(|| me.sign(&header.broadcast_signing_bytes(message))).transpose()? {
        None => plaintext.push(0),
        Some(NodeSignature { signature, run_key: None }) => {
            plaintext.push(1);
            plaintext.extend_from_slice(&signature);
        }
        Some(NodeSignature { signature, run_key: Some(run_key) }) => {
            plaintext.push(2);
            plaintext.extend_from_slice(&run_key.to_bytes());
            plaintext.extend_from_slice(&signature);
        }
    }
    plaintext.extend_from_slice(message);
    Ok(seal_plaintext(me, header, recipient, &plaintext))
}

/// Seals a plaintext as [`seal`] lays it out.
fn seal_plaintext(me: &NodeKeys, header: EnvelopeHeader, recipient: &KxPublic, plaintext: &[u8]) -> Envelope {
    let (sk, pk) = me.kx_pair();
    let mode = OpModeS::<ChannelKem>::Auth((sk.clone(), pk.clone()));
    let (encapped, ciphertext) =
        hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, ChannelKem, _>(&mode, recipient, INFO, plaintext, &header.aad(), &mut rand_core::OsRng)
            .expect("HPKE seal cannot fail for a valid recipient key");
    let mut sealed = encapped.to_bytes().to_vec();
    sealed.extend_from_slice(&ciphertext);
    Envelope { header, sealed }
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
    let (signed, rest) = match (plaintext.first(), h.broadcast) {
        (Some(0), false) => return Ok(Zeroizing::new(plaintext[1..].to_vec())),
        (Some(1), true) if plaintext.len() >= 65 => {
            let (signature, rest) = plaintext[1..].split_at(64);
            (NodeSignature { signature: signature.try_into().expect("64 bytes"), run_key: None }, rest)
        }
        (Some(2), true) if plaintext.len() >= 1 + RUN_KEY_BYTES + 64 => {
            let (run_key, rest) = plaintext[1..].split_at(RUN_KEY_BYTES);
            let (signature, rest) = rest.split_at(64);
            let run_key = Some(RunKey::from_bytes(run_key.try_into().expect("a run key's length")));
            (NodeSignature { signature: signature.try_into().expect("64 bytes"), run_key }, rest)
        }
        _ => return Err(bad()),
    };
    if !signed.holds(&h.sender, &h.broadcast_signing_bytes(rest), crate::now_ms(), crate::identity::pinned(sender_sign)) {
        return Err(bad());
    }
    Ok(Zeroizing::new(rest.to_vec()))
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
    fn a_broadcast_by_a_run_key_opens_only_while_the_senders_certificate_holds() {
        use ed25519_dalek::Signer as _;
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (keys(d.path(), "a"), keys(d.path(), "b"));
        let (a_kx, a_sign) = pubs(&a);
        let (b_kx, _) = pubs(&b);
        let run = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        let key = run.verifying_key().to_bytes();
        // A broadcast from `a` by the run key, certified by `certifier`.
        let broadcast = |certifier: &NodeKeys, not_after_ms: u64| {
            let header = header("a", "b", true);
            let cert = certifier.sign(&RunKey::signing_bytes(&NodeId::new("a").unwrap(), &key, not_after_ms)).unwrap().signature;
            let mut plaintext = vec![2];
            plaintext.extend_from_slice(&RunKey { key, not_after_ms, signature: cert }.to_bytes());
            plaintext.extend_from_slice(&run.sign(&header.broadcast_signing_bytes(b"round one")).to_bytes());
            plaintext.extend_from_slice(b"round one");
            seal_plaintext(&a, header, &b_kx, &plaintext)
        };
        let later = crate::now_ms() + 60_000;
        assert_eq!(&**open(&b, &broadcast(&a, later), &a_kx, &a_sign).unwrap(), b"round one");
        let bad = ChannelError::BadBroadcast(NodeId::new("a").unwrap());
        let past = crate::now_ms() - 2 * conclave_proto::run_key::RUN_KEY_SKEW_MS;
        assert_eq!(open(&b, &broadcast(&a, past), &a_kx, &a_sign).unwrap_err(), bad, "its certificate ended");
        assert_eq!(open(&b, &broadcast(&b, later), &a_kx, &a_sign).unwrap_err(), bad, "certified by another node's key");
        let mut cut = vec![2];
        cut.extend_from_slice(&[0; RUN_KEY_BYTES]);
        assert_eq!(open(&b, &seal_plaintext(&a, header("a", "b", true), &b_kx, &cut), &a_kx, &a_sign).unwrap_err(), bad, "too short to hold a signature");
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
