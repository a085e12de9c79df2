//! The end-to-end channel between enclaves.
//!
//! Each protocol message is sealed for its one recipient under a key that
//! only the two nodes hold: NaCl's `crypto_box` construction (Bernstein,
//! Lange, Schwabe, "The security impact of a new cryptographic library",
//! 2012; libsodium's `crypto_box_curve25519xchacha20poly1305`): X25519
//! between the two nodes' static channel keys, computed once per peer and
//! kept ([`NodeKeys::pair_keys`]), then XChaCha20-Poly1305 with a random
//! 24-byte nonce per message. HKDF-SHA256 (RFC 5869) turns the shared
//! secret into one key per direction, bound to both nodes' ids and keys.
//! Only the two nodes can seal or open under their key, so a message that
//! opens is from the claimed sender (as in HPKE's Auth mode, which this
//! replaces: its three X25519 operations per message were a third of a
//! signer's CPU). Neither gives forward secrecy: the channel keys are the
//! node's long-term keys, sealed by its custody (SECURITY.md).
//!
//! The envelope header is the associated data, so session, round, sender,
//! recipient and sequence number are all bound to the ciphertext. The
//! receiver keeps the highest sequence number seen per sender and session
//! ([`ReplayGuard`]), which refuses replays and reorders.
//!
//! Plaintext: one flag byte, then for a broadcast the sender's Ed25519
//! signature over [`EnvelopeHeader::broadcast_signing_bytes`], then the
//! protocol message. Flags: 0 = to this recipient only; 1 = broadcast
//! signed by the identity key (64 bytes); 2 = broadcast signed by a run key
//! (its certificate, [`RunKey::to_bytes`], then 64 bytes).

use crate::identity::{IdentityError, KxPublic, NodeKeys};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use conclave_proto::envelope::{Envelope, EnvelopeHeader};
use conclave_proto::run_key::{NodeSignature, RunKey, RUN_KEY_BYTES};
use conclave_proto::NodeId;
use ed25519_dalek::VerifyingKey;
use std::collections::HashMap;
use zeroize::Zeroizing;

/// Names this construction in the key derivation, so that keys of another
/// use of the same X25519 keys never match.
const INFO: &[u8] = b"conclave/e2e/v2";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// The keys of the channel between this node and one peer.
pub struct PairKeys {
    to_peer: Zeroizing<[u8; 32]>,
    from_peer: Zeroizing<[u8; 32]>,
}

impl PairKeys {
    /// Derives the keys between `me` (id, secret, public) and `peer` (id,
    /// public); `None` if the peer's key gives no shared secret.
    pub fn derive(me: (&NodeId, &x25519_dalek::StaticSecret, &KxPublic), peer: (&NodeId, &KxPublic)) -> Option<PairKeys> {
        let (my_id, my_secret, my_public) = me;
        let (peer_id, peer_public) = peer;
        let shared = my_secret.diffie_hellman(peer_public);
        if !shared.was_contributory() {
            return None;
        }
        let kdf = hkdf::Hkdf::<sha2::Sha256>::new(Some(INFO), shared.as_bytes());
        let key = |from: (&NodeId, &KxPublic), to: (&NodeId, &KxPublic)| {
            let mut info = INFO.to_vec();
            for (id, public) in [from, to] {
                info.push(id.as_str().len() as u8);
                info.extend_from_slice(id.as_str().as_bytes());
                info.extend_from_slice(public.as_bytes());
            }
            let mut key = Zeroizing::new([0u8; 32]);
            kdf.expand(&info, key.as_mut()).expect("32 bytes is a valid HKDF-SHA256 output length");
            key
        };
        Some(PairKeys { to_peer: key((my_id, my_public), (peer_id, peer_public)), from_peer: key((peer_id, peer_public), (my_id, my_public)) })
    }
}

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
    seal_plaintext(me, header, recipient, &plaintext)
}

/// Seals a plaintext as [`seal`] lays it out.
fn seal_plaintext(me: &NodeKeys, header: EnvelopeHeader, recipient: &KxPublic, plaintext: &[u8]) -> Result<Envelope, IdentityError> {
    let keys = me.pair_keys(&header.recipient, recipient)?;
    let mut nonce = [0u8; NONCE_LEN];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut nonce);
    let ciphertext = XChaCha20Poly1305::new((&*keys.to_peer).into())
        .encrypt(&XNonce::from(nonce), Payload { msg: plaintext, aad: &header.aad() })
        .expect("XChaCha20-Poly1305 seals any message that fits in memory");
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&ciphertext);
    Ok(Envelope { header, sealed })
}

/// Opens an envelope addressed to `me` from a sender with keys
/// `sender_kx`/`sender_sign`, returning the protocol message.
pub fn open(me: &NodeKeys, envelope: &Envelope, sender_kx: &KxPublic, sender_sign: &VerifyingKey) -> Result<Zeroizing<Vec<u8>>, ChannelError> {
    let h = &envelope.header;
    let unauthentic = || ChannelError::Unauthentic(h.sender.clone());
    if h.recipient != *me.node_id() || envelope.sealed.len() < NONCE_LEN + TAG_LEN {
        return Err(unauthentic());
    }
    let keys = me.pair_keys(&h.sender, sender_kx).map_err(|_| unauthentic())?;
    let (nonce, ciphertext) = envelope.sealed.split_at(NONCE_LEN);
    let nonce: [u8; NONCE_LEN] = nonce.try_into().expect("split at its length");
    let plaintext = Zeroizing::new(
        XChaCha20Poly1305::new((&*keys.from_peer).into())
            .decrypt(&XNonce::from(nonce), Payload { msg: ciphertext, aad: &h.aad() })
            .map_err(|_| unauthentic())?,
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
    let pinned = crate::identity::pinned(sender_sign);
    // With a run key, the one signature under the identity key is the run
    // key's certificate: checked once per certificate.
    let verify = |key: Option<&[u8; 32]>, bytes: &[u8], signature: &[u8; 64]| match (key, signed.run_key.is_some()) {
        (None, true) => me.peer_certified(&h.sender, sender_sign, bytes, signature),
        _ => pinned(key, bytes, signature),
    };
    if !signed.holds(&h.sender, &h.broadcast_signing_bytes(rest), crate::now_ms(), verify) {
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
        // A broadcast from `a`, signed by `signer` as the run key `key`,
        // certified by `certifier` (its signature passed through `cert`).
        let broadcast_by = |certifier: &NodeKeys, not_after_ms: u64, cert: fn([u8; 64]) -> [u8; 64], signer: &ed25519_dalek::SigningKey| {
            let header = header("a", "b", true);
            let signature = cert(certifier.sign(&RunKey::signing_bytes(&NodeId::new("a").unwrap(), &key, not_after_ms)).unwrap().signature);
            let mut plaintext = vec![2];
            plaintext.extend_from_slice(&RunKey { key, not_after_ms, signature }.to_bytes());
            plaintext.extend_from_slice(&signer.sign(&header.broadcast_signing_bytes(b"round one")).to_bytes());
            plaintext.extend_from_slice(b"round one");
            seal_plaintext(&a, header, &b_kx, &plaintext).unwrap()
        };
        let broadcast = |certifier: &NodeKeys, not_after_ms: u64| broadcast_by(certifier, not_after_ms, |s| s, &run);
        let later = crate::now_ms() + 60_000;
        assert_eq!(&**open(&b, &broadcast(&a, later), &a_kx, &a_sign).unwrap(), b"round one");
        // Its certificate, checked once, is remembered: what it certifies
        // is still checked, and so is any other signature on it.
        assert_eq!(&**open(&b, &broadcast(&a, later), &a_kx, &a_sign).unwrap(), b"round one");
        let bad = ChannelError::BadBroadcast(NodeId::new("a").unwrap());
        let other = ed25519_dalek::SigningKey::from_bytes(&[6; 32]);
        assert_eq!(open(&b, &broadcast_by(&a, later, |s| s, &other), &a_kx, &a_sign).unwrap_err(), bad, "signed by a key the certificate does not name");
        let flipped = |mut s: [u8; 64]| {
            s[0] ^= 1;
            s
        };
        assert_eq!(open(&b, &broadcast_by(&a, later, flipped, &run), &a_kx, &a_sign).unwrap_err(), bad, "the remembered certificate with another signature");
        let past = crate::now_ms() - 2 * conclave_proto::run_key::RUN_KEY_SKEW_MS;
        assert_eq!(open(&b, &broadcast(&a, past), &a_kx, &a_sign).unwrap_err(), bad, "its certificate ended");
        assert_eq!(open(&b, &broadcast(&b, later), &a_kx, &a_sign).unwrap_err(), bad, "certified by another node's key");
        let mut cut = vec![2];
        cut.extend_from_slice(&[0; RUN_KEY_BYTES]);
        assert_eq!(
            open(&b, &seal_plaintext(&a, header("a", "b", true), &b_kx, &cut).unwrap(), &a_kx, &a_sign).unwrap_err(),
            bad,
            "too short to hold a signature"
        );
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
