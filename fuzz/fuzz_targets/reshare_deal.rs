//! A resharing deal as a new member's signer reads it from a dealer, after
//! the channel opened it: the broadcast commitments, the sub-share, and the
//! old key's public facts.
#![no_main]
use conclave_enclave::reshare::wire::{CommitmentsMessage, OldKeyMessage, SubShareMessage};
use conclave_enclave::reshare::{Ed25519, Secp256k1};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(m) = CommitmentsMessage::decode(data) {
        assert_eq!(CommitmentsMessage::decode(&m.encode()).ok(), Some(m.clone()), "accepted commitments re-encode to accepted ones");
        let _ = m.points::<Secp256k1>();
        let _ = m.points::<Ed25519>();
    }
    if let Ok(m) = SubShareMessage::decode(data) {
        let _ = m.sub_share::<Secp256k1>();
        let _ = m.sub_share::<Ed25519>();
    }
    if let Ok(m) = OldKeyMessage::decode(data) {
        assert_eq!(OldKeyMessage::decode(&m.encode()).ok(), Some(m.clone()), "accepted old keys re-encode to accepted ones");
        let _ = m.old_key::<Secp256k1>();
        let _ = m.old_key::<Ed25519>();
    }
});
