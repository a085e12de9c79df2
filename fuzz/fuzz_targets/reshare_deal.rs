//! A resharing deal as a new member's signer reads it from a dealer, after
//! the channel opened it: the broadcast commitments and the sub-share.
#![no_main]
use conclave_enclave::reshare::wire::{CommitmentsMessage, SubShareMessage};
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
});
