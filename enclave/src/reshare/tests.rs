//! Resharing, specified by example: keys move between committees on both
//! curves and still sign under the old public key; a dealer whose values do
//! not check is named with the check it failed.

use super::wire::{self, CommitmentsMessage, OldKeyMessage, SubShareMessage};
use super::*;
use crate::{ecdsa, eddsa};
use conclave_proto::NodeId;
use generic_ec::Point;
use rand_core::OsRng;
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// What each new member receives from each dealer, after the wire: member
/// `j`'s map, keyed by dealer.
fn deliveries<E: Curve>(deals: &[(u16, Deal<E>)], j: u16) -> BTreeMap<u16, Dealt<E>> {
    deals
        .iter()
        .map(|(dealer, deal)| {
            let commitments = CommitmentsMessage::new(&deal.commitments).encode();
            let sub_share = SubShareMessage::new(&deal.sub_shares[usize::from(j)]).encode();
            (*dealer, wire::dealt(*dealer, &commitments, &sub_share).unwrap())
        })
        .collect()
}

fn deal_all<E: Curve>(old: &[KeyShare<E>], dealers: &[u16], new: &NewCommittee<E>) -> Vec<(u16, Deal<E>)> {
    dealers.iter().map(|&d| (d, deal(&old[usize::from(d)], dealers, new, &mut OsRng).unwrap())).collect()
}

/// Runs the whole protocol in memory: `dealers` of `old` deal, every new
/// member receives through the wire encoding and builds its share.
fn reshare_all<E: Curve>(old: &[KeyShare<E>], dealers: &[u16], new: &NewCommittee<E>) -> Vec<KeyShare<E>> {
    let deals = deal_all(old, dealers, new);
    let old_key = old[0].old_key();
    (0..new.n()).map(|j| receive(&old_key, dealers, new, j, &deliveries(&deals, j)).unwrap()).collect()
}

fn secret_of<E: Curve>(shares: &[&KeyShare<E>]) -> Scalar<E> {
    let cores: Vec<&key_share::CoreKeyShare<E>> = shares.iter().map(|s| &s.core).collect();
    *key_share::reconstruct_secret_key(&cores).unwrap().as_ref()
}

fn committee(n: usize) -> Vec<NodeId> {
    (0..n).map(|i| NodeId::new(format!("node-{i}")).unwrap()).collect()
}

/// The checks every successful reshare must pass, whatever the curve: same
/// key, same chain code, same secret, members agree on every public fact.
fn assert_same_key<E: Curve>(old: &[KeyShare<E>], new_shares: &[KeyShare<E>], new: &NewCommittee<E>) {
    let old_pk = old[0].core.shared_public_key;
    for (j, share) in new_shares.iter().enumerate() {
        assert_eq!(share.core.i as usize, j);
        assert_eq!(share.core.shared_public_key, old_pk);
        assert_eq!(share.chain_code, old[0].chain_code);
        assert_eq!(share.core.min_signers(), new.threshold());
        assert_eq!(share.core.public_shares, new_shares[0].core.public_shares);
    }
    let t_old = usize::from(old[0].core.min_signers());
    let old_quorum: Vec<&KeyShare<E>> = old.iter().take(t_old).collect();
    let new_quorum: Vec<&KeyShare<E>> = new_shares.iter().rev().take(usize::from(new.threshold())).collect();
    assert_eq!(secret_of(&new_quorum), secret_of(&old_quorum), "the new shares share the old secret");
    let names = committee(new_shares.len());
    let digests: Vec<[u8; 32]> = new_shares.iter().map(|s| confirmation_digest(s, &names, 2)).collect();
    assert!(digests.iter().all(|d| *d == digests[0]), "every member confirms the same digest");
}

fn ecdsa_sign_and_verify(stored: &[Zeroizing<Vec<u8>>], aux: &[Zeroizing<Vec<u8>>], signers: &[u16], public_key: &[u8]) {
    use k256::ecdsa::signature::hazmat::PrehashVerifier;
    let digest = [0x5a; 32];
    let pick = |all: &[Zeroizing<Vec<u8>>]| -> Vec<Zeroizing<Vec<u8>>> { signers.iter().map(|&i| all[usize::from(i)].clone()).collect() };
    let rs = ecdsa::sign_in_process(&pick(stored), &pick(aux), signers, digest, ecdsa::Threads::Each).unwrap();
    let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(public_key).unwrap();
    vk.verify_prehash(&digest, &k256::ecdsa::Signature::from_slice(&rs).unwrap()).expect("verifies under the old key");
}

fn eddsa_sign_and_verify(stored: &[Zeroizing<Vec<u8>>], signers: &[u16], public_key: &[u8]) {
    let message = b"moved, not rebuilt";
    let quorum: Vec<Zeroizing<Vec<u8>>> = signers.iter().map(|&i| stored[usize::from(i)].clone()).collect();
    let sig = eddsa::sign_in_process(&quorum, signers, message).unwrap();
    let vk = ed25519_dalek::VerifyingKey::from_bytes(public_key.try_into().unwrap()).unwrap();
    vk.verify_strict(message, &ed25519_dalek::Signature::from_slice(&sig).unwrap()).expect("verifies under the old key");
}

#[test]
fn ecdsa_2_of_3_to_3_of_4_keeps_key_and_xpub_and_signs() {
    let old = ecdsa::testing::dealt(3, 2);
    assert!(old[0].chain_code.is_some(), "the fixture is an HD key");
    let new = NewCommittee::new(4, 3).unwrap();
    let new_shares = reshare_all(&old, &[0, 2], &new);
    assert_same_key(&old, &new_shares, &new);

    let old_pk = old[0].core.shared_public_key.to_bytes(true).to_vec();
    let old_xpub = conclave_proto::xpub::Xpub { public_key: old_pk.as_slice().try_into().unwrap(), chain_code: old[0].chain_code.unwrap() };
    let aux = ecdsa::testing::aux_of_four();
    let stored: Vec<Zeroizing<Vec<u8>>> = new_shares.into_iter().map(|s| ecdsa::reshared(s).unwrap()).collect();
    for share in &stored {
        assert_eq!(ecdsa::testing::xpub(share), old_xpub.encode(), "same xpub, so the same derivations");
    }
    ecdsa_sign_and_verify(&stored, &aux, &[0, 2, 3], &old_pk);
    // Stored new shares read back as dealers of the next reshare.
    let again = ecdsa::reshare_source(&stored[1]).unwrap();
    assert_eq!(again.core.public_shares, ecdsa::reshare_source(&stored[0]).unwrap().core.public_shares);
    assert_eq!(again.core.i, 1);
}

#[test]
fn ecdsa_3_of_4_to_2_of_3_keeps_the_key() {
    let old = ecdsa::testing::dealt(4, 3);
    let new = NewCommittee::new(3, 2).unwrap();
    let new_shares = reshare_all(&old, &[1, 2, 3], &new);
    assert_same_key(&old, &new_shares, &new);
    for s in new_shares {
        ecdsa::reshared(s).unwrap();
    }
}

#[test]
fn eddsa_2_of_3_to_3_of_4_keeps_key_and_signs() {
    let stored = eddsa::testing::dealt(3, 2, false);
    let old: Vec<_> = stored.iter().map(|s| eddsa::reshare_source(s).unwrap()).collect();
    let new = NewCommittee::new(4, 3).unwrap();
    let new_shares = reshare_all(&old, &[0, 1], &new);
    assert_same_key(&old, &new_shares, &new);
    let new_stored: Vec<Zeroizing<Vec<u8>>> = new_shares.into_iter().map(|s| eddsa::reshared(s).unwrap()).collect();
    let old_pk = eddsa::testing::public_key(&stored[0]);
    assert_eq!(eddsa::testing::public_key(&new_stored[2]), old_pk);
    eddsa_sign_and_verify(&new_stored, &[1, 2, 3], &old_pk);
}

#[test]
fn eddsa_3_of_4_at_any_points_to_2_of_3_signs() {
    // Old shares at random evaluation points: the dealers' weights must
    // come from the old key's points, not from their indexes.
    let stored = eddsa::testing::dealt(4, 3, true);
    let old: Vec<_> = stored.iter().map(|s| eddsa::reshare_source(s).unwrap()).collect();
    let new = NewCommittee::new(3, 2).unwrap();
    // More dealers than the threshold is as good as exactly t.
    let new_shares = reshare_all(&old, &[0, 1, 2, 3], &new);
    assert_same_key(&old, &new_shares, &new);
    let new_stored: Vec<Zeroizing<Vec<u8>>> = new_shares.into_iter().map(|s| eddsa::reshared(s).unwrap()).collect();
    eddsa_sign_and_verify(&new_stored, &[0, 2], &eddsa::testing::public_key(&stored[0]));
}

/// Old 2-of-3 EdDSA shares, dealers {0, 2}, new 3-of-4: the fixture for
/// the refusals below.
struct Fixture {
    old: Vec<KeyShare<Ed25519>>,
    new: NewCommittee<Ed25519>,
    deals: Vec<(u16, Deal<Ed25519>)>,
}

fn fixture() -> Fixture {
    let old: Vec<_> = eddsa::testing::dealt(3, 2, false).iter().map(|s| eddsa::reshare_source(s).unwrap()).collect();
    let new = NewCommittee::new(4, 3).unwrap();
    let deals = deal_all(&old, &[0, 2], &new);
    Fixture { old, new, deals }
}

fn refusal(old: &[KeyShare<Ed25519>], new: &NewCommittee<Ed25519>, delivered: &BTreeMap<u16, Dealt<Ed25519>>) -> ReshareError {
    match receive(&old[0].old_key(), &[0, 2], new, 1, delivered) {
        Err(e) => e,
        Ok(_) => panic!("accepted tampered deals"),
    }
}

#[test]
fn a_tampered_sub_share_blames_its_dealer() {
    let Fixture { old, new, deals } = fixture();
    let mut delivered = deliveries(&deals, 1);
    let dealt = delivered.get_mut(&2).unwrap();
    dealt.sub_share = dealt.sub_share.off_by_one();
    let e = refusal(&old, &new, &delivered);
    assert_eq!(e, ReshareError::Dealer { dealer: 2, check: DealerCheck::SubShare });
    assert_eq!(e.blamed_dealer(), Some(2));
}

#[test]
fn a_dealer_shifting_the_key_blames_its_dealer_even_when_consistent() {
    // Dealer 0 deals f + 1: its commitments and sub-shares agree with each
    // other, so only the check against its old public share catches it.
    let Fixture { old, new, deals } = fixture();
    let mut delivered = deliveries(&deals, 1);
    let dealt = delivered.get_mut(&0).unwrap();
    dealt.commitments[0] += Point::generator().to_point();
    dealt.sub_share = dealt.sub_share.off_by_one();
    assert_eq!(refusal(&old, &new, &delivered), ReshareError::Dealer { dealer: 0, check: DealerCheck::Commitment });
}

#[test]
fn a_wrong_number_of_commitments_blames_its_dealer() {
    let Fixture { old, new, deals } = fixture();
    for change in [Vec::pop as fn(&mut Vec<Point<Ed25519>>) -> Option<Point<Ed25519>>, |c| {
        c.push(Point::generator().to_point());
        None
    }] {
        let mut delivered = deliveries(&deals, 1);
        change(&mut delivered.get_mut(&2).unwrap().commitments);
        assert_eq!(refusal(&old, &new, &delivered), ReshareError::Dealer { dealer: 2, check: DealerCheck::Length });
    }
}

#[test]
fn a_missing_or_uninvited_dealer_is_named() {
    let Fixture { old, new, deals } = fixture();
    let mut delivered = deliveries(&deals, 1);
    delivered.remove(&2);
    assert_eq!(refusal(&old, &new, &delivered), ReshareError::Dealer { dealer: 2, check: DealerCheck::Missing });

    let mut delivered = deliveries(&deals, 1);
    let extra = deal(&old[1], &[0, 1, 2], &new, &mut OsRng).unwrap();
    delivered.insert(1, deliveries(&[(1, extra)], 1).remove(&1).unwrap());
    assert_eq!(refusal(&old, &new, &delivered), ReshareError::Dealer { dealer: 1, check: DealerCheck::NotDealing });
}

#[test]
fn bad_dealing_sets_and_committees_are_refused() {
    let Fixture { old, new, .. } = fixture();
    for dealers in [&[0][..], &[2, 0], &[0, 0], &[0, 3]] {
        assert_eq!(deal(&old[0], dealers, &new, &mut OsRng).err(), Some(ReshareError::DealingSet), "{dealers:?}");
    }
    assert_eq!(deal(&old[1], &[0, 2], &new, &mut OsRng).err(), Some(ReshareError::NotMember { index: 1 }));
    assert_eq!(receive(&old[0].old_key(), &[0, 2], &new, 4, &BTreeMap::new()).err(), Some(ReshareError::NotMember { index: 4 }));
    for dealers in [&[][..], &[1], &[2, 0]] {
        assert_eq!(receive(&old[0].old_key(), dealers, &new, 0, &BTreeMap::new()).err(), Some(ReshareError::DealingSet), "{dealers:?}");
    }
    for (n, t) in [(1, 1), (3, 1), (3, 4), (MAX_PARTIES + 1, 2)] {
        assert_eq!(NewCommittee::<Ed25519>::new(n, t).err(), Some(ReshareError::Committee { n, threshold: t }));
    }
}

#[test]
fn undecodable_or_foreign_deals_blame_their_dealer() {
    let Fixture { deals, .. } = fixture();
    let commitments = CommitmentsMessage::new(&deals[0].1.commitments).encode();
    let sub_share = SubShareMessage::new(&deals[0].1.sub_shares[0]).encode();
    let encoding = Some(ReshareError::Dealer { dealer: 0, check: DealerCheck::Encoding });
    // An ed25519 deal is not a secp256k1 deal.
    assert_eq!(wire::dealt::<Secp256k1>(0, &commitments, &sub_share).err(), encoding);
    assert_eq!(wire::dealt::<Ed25519>(0, b"{}", &sub_share).err(), encoding);
    assert_eq!(wire::dealt::<Ed25519>(0, &commitments, b"null").err(), encoding);
    // A scalar at or above the group order is not canonical.
    let forged = format!(r#"{{"v":1,"curve":"{}","sub_share":"//////////////////////////////////////////8="}}"#, Ed25519::CURVE_NAME);
    assert!(SubShareMessage::decode(forged.as_bytes()).is_ok());
    assert_eq!(wire::dealt::<Ed25519>(0, &commitments, forged.as_bytes()).err(), encoding);
}

#[test]
fn deal_messages_refuse_oversize_unknown_fields_and_other_versions() {
    let Fixture { deals, .. } = fixture();
    let m = CommitmentsMessage::new(&deals[0].1.commitments);
    assert_eq!(CommitmentsMessage::decode(&m.encode()).unwrap(), m);
    let big = vec![b' '; wire::MAX_COMMITMENTS_BYTES + 1];
    assert!(matches!(CommitmentsMessage::decode(&big), Err(conclave_proto::codec::DecodeError::TooLarge { .. })));
    let text = String::from_utf8(m.encode()).unwrap();
    let extra = text.replacen('{', "{\"x\":1,", 1);
    assert!(CommitmentsMessage::decode(extra.as_bytes()).is_err());
    let v2 = text.replacen("\"v\":1", "\"v\":2", 1);
    assert!(matches!(CommitmentsMessage::decode(v2.as_bytes()), Err(conclave_proto::codec::DecodeError::Version { .. })));
    let s = String::from_utf8(SubShareMessage::new(&deals[0].1.sub_shares[0]).encode().to_vec()).unwrap();
    assert!(SubShareMessage::decode(s.replacen("\"v\":1", "\"v\":2", 1).as_bytes()).is_err());
    assert!(SubShareMessage::decode(&vec![b' '; wire::MAX_SUB_SHARE_BYTES + 1]).is_err());
}

/// xorshift64*: a fixed-seed stream, so a failure reproduces.
struct Bytes(u64);

impl Bytes {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn mutated_deal_messages_never_panic_and_what_decodes_round_trips() {
    let Fixture { old, deals, .. } = fixture();
    let commitments = CommitmentsMessage::new(&deals[0].1.commitments).encode();
    let sub_share = SubShareMessage::new(&deals[0].1.sub_shares[0]).encode().to_vec();
    let old_key = OldKeyMessage::new(&old[0].old_key()).unwrap().encode();
    let mut rng = Bytes(0x9e37_79b9_7f4a_7c15);
    let mut accepted = 0;
    for round in 0..4000 {
        let mut input = [&commitments, &sub_share, &old_key][round % 3].clone();
        for _ in 0..=rng.below(4) {
            let at = rng.below(input.len() + 1);
            match rng.below(4) {
                0 if at < input.len() => input[at] ^= 1 << rng.below(8),
                1 => input.insert(at, rng.next() as u8),
                2 if at < input.len() => {
                    input.remove(at);
                }
                _ => input.truncate(at),
            }
        }
        if let Ok(m) = CommitmentsMessage::decode(&input) {
            assert_eq!(CommitmentsMessage::decode(&m.encode()).unwrap(), m);
            accepted += 1;
        }
        if let Ok(m) = SubShareMessage::decode(&input) {
            let again = SubShareMessage::decode(&m.encode()).unwrap();
            assert_eq!(again.encode(), m.encode());
            accepted += 1;
        }
        if let Ok(m) = OldKeyMessage::decode(&input) {
            assert_eq!(OldKeyMessage::decode(&m.encode()).unwrap(), m);
            let _ = m.old_key::<Ed25519>();
            accepted += 1;
        }
        let _ = wire::dealt::<Ed25519>(0, &input, &sub_share);
        let _ = wire::dealt::<Secp256k1>(0, &commitments, &input);
    }
    // Some mutations (a flipped bit in hex case, say) still decode, so the
    // round-trip branch above was exercised.
    assert!(accepted > 0);
}

#[test]
fn the_confirmation_digest_covers_committee_threshold_and_every_public_share() {
    let old: Vec<_> = eddsa::testing::dealt(3, 2, false).iter().map(|s| eddsa::reshare_source(s).unwrap()).collect();
    let new = NewCommittee::new(4, 3).unwrap();
    let shares = reshare_all(&old, &[0, 1], &new);
    let names = committee(4);
    let base = Confirmation::of(&shares[0], &names, 2);
    let digest = base.digest();
    assert_eq!(digest, confirmation_digest(&shares[3], &names, 2));

    let mut other_names = names.clone();
    other_names[3] = NodeId::new("node-9").unwrap();
    let mut reordered = names.clone();
    reordered.swap(0, 1);
    let mut variants = vec![
        Confirmation { committee: &other_names, ..Confirmation::of(&shares[0], &names, 2) },
        Confirmation { committee: &reordered, ..Confirmation::of(&shares[0], &names, 2) },
        Confirmation { committee: &names[..3], ..Confirmation::of(&shares[0], &names, 2) },
        Confirmation { threshold: 2, ..Confirmation::of(&shares[0], &names, 2) },
        Confirmation { version: 3, ..Confirmation::of(&shares[0], &names, 2) },
        Confirmation { chain_code: Some([1; 32]), ..Confirmation::of(&shares[0], &names, 2) },
        Confirmation { public_key: Point::generator().to_point(), ..Confirmation::of(&shares[0], &names, 2) },
    ];
    let shifted: Vec<Vec<_>> = (0..4)
        .map(|m| {
            let mut p = shares[0].core.public_shares.clone();
            p[m] = NonZero::from_point(*p[m] + Point::generator().to_point()).unwrap();
            p
        })
        .collect();
    for p in &shifted {
        variants.push(Confirmation { public_shares: p, ..Confirmation::of(&shares[0], &names, 2) });
    }
    for (k, v) in variants.iter().enumerate() {
        assert_ne!(v.digest(), digest, "variant {k}");
    }
}

#[test]
fn new_only_members_take_the_old_key_only_when_every_dealer_agrees_with_the_request() {
    let Fixture { old, new, deals } = fixture();
    let pk = *old[0].core.shared_public_key;
    let copy = |k: &OldKey<Ed25519>| OldKeyMessage::new(k).unwrap().encode();
    let honest: BTreeMap<u16, Vec<u8>> = [0, 2].map(|d| (d, copy(&old[usize::from(d)].old_key()))).into();

    let agreed = wire::agreed_old_key(&[0, 2], &honest, &pk, None).unwrap();
    assert_eq!(OldKeyMessage::new(&agreed).unwrap(), OldKeyMessage::new(&old[1].old_key()).unwrap());
    receive(&agreed, &[0, 2], &new, 3, &deliveries(&deals, 3)).unwrap();

    // Not the key (or chain code) the signed request names: the dealer is blamed.
    let other: Vec<_> = eddsa::testing::dealt(3, 2, false).iter().map(|s| eddsa::reshare_source(s).unwrap()).collect();
    let mut copies = honest.clone();
    copies.insert(2, copy(&other[0].old_key()));
    let old_key = Some(ReshareError::Dealer { dealer: 2, check: DealerCheck::OldKey });
    assert_eq!(wire::agreed_old_key(&[0, 2], &copies, &pk, None).err(), old_key);
    let first = Some(ReshareError::Dealer { dealer: 0, check: DealerCheck::OldKey });
    assert_eq!(wire::agreed_old_key(&[0, 2], &honest, &pk, Some([7; 32])).err(), first);

    // The same key, other public shares (two members swapped): a valid copy
    // that disagrees with the other dealer's, and no telling which lies.
    let mut swapped = old[0].old_key().info.into_inner();
    swapped.public_shares.swap(0, 1);
    swapped.vss_setup.as_mut().unwrap().I.swap(0, 1);
    let swapped = OldKey { info: key_share::KeyInfo::validate(swapped).unwrap(), chain_code: None };
    let mut copies = honest.clone();
    copies.insert(2, copy(&swapped));
    assert_eq!(wire::agreed_old_key(&[0, 2], &copies, &pk, None).err(), Some(ReshareError::OldKeyDisagreement));

    let mut copies = honest.clone();
    copies.insert(0, b"{}".to_vec());
    assert_eq!(wire::agreed_old_key(&[0, 2], &copies, &pk, None).err(), Some(ReshareError::Dealer { dealer: 0, check: DealerCheck::Encoding }));
    let mut copies = honest.clone();
    copies.remove(&2);
    assert_eq!(wire::agreed_old_key(&[0, 2], &copies, &pk, None).err(), Some(ReshareError::Dealer { dealer: 2, check: DealerCheck::Missing }));
    // An ed25519 key is not a secp256k1 key.
    let secp_pk = *ecdsa::testing::dealt(3, 2)[0].core.shared_public_key;
    assert_eq!(wire::agreed_old_key(&[0, 2], &honest, &secp_pk, None).err(), Some(ReshareError::Dealer { dealer: 0, check: DealerCheck::Encoding }));
}

/// The three rounds of a session for every party, in round-based's
/// simulator: party `p` holds `old[holds[p]]` if any, and deals and joins
/// as `roles` say.
fn run_rounds(old: &[KeyShare<Ed25519>], holds: &[Option<usize>], roles: &rounds::Roles, new: &NewCommittee<Ed25519>) -> Vec<rounds::Reshared<Ed25519>> {
    let names = committee(usize::from(new.n()));
    let public_key = *old[0].core.shared_public_key;
    round_based::sim::run(holds.len() as u16, |i, party| {
        let share = holds[usize::from(i)].map(|h| &old[h]);
        let old_key = match share {
            Some(s) => rounds::OldKeySource::Own(s.old_key()),
            None => rounds::OldKeySource::Dealers { public_key, chain_code: None },
        };
        let setup = rounds::Setup { roles, new, committee: &names, version: 2, old_key, tamper: false };
        async move { rounds::run(party, i, setup, share, &mut OsRng).await }
    })
    .unwrap()
    .expect_ok()
    .into_vec()
}

fn joined(outcomes: Vec<rounds::Reshared<Ed25519>>) -> (Vec<KeyShare<Ed25519>>, usize) {
    let mut shares = Vec::new();
    let mut left = 0;
    for outcome in outcomes {
        match outcome {
            rounds::Reshared::Joined(share) => shares.push(share),
            rounds::Reshared::Left => left += 1,
        }
    }
    (shares, left)
}

#[test]
fn a_session_moves_2_of_3_to_3_of_4_with_a_node_joining() {
    // Old committee a, b, c (2 of 3); a and b deal; new committee a, b, c, d
    // (3 of 4): c joins with its old share unused, d holds nothing and
    // takes the old key's facts from the dealers.
    let stored = eddsa::testing::dealt(3, 2, false);
    let old: Vec<_> = stored.iter().map(|s| eddsa::reshare_source(s).unwrap()).collect();
    let new = NewCommittee::new(4, 3).unwrap();
    let roles = rounds::Roles { dealing: vec![Some(0), Some(1), None, None], joining: vec![Some(0), Some(1), Some(2), Some(3)] };
    let (shares, left) = joined(run_rounds(&old, &[Some(0), Some(1), Some(2), None], &roles, &new));
    assert_eq!((shares.len(), left), (4, 0));
    assert_same_key(&old, &shares, &new);
    let new_stored: Vec<Zeroizing<Vec<u8>>> = shares.into_iter().map(|s| eddsa::reshared(s).unwrap()).collect();
    eddsa_sign_and_verify(&new_stored, &[0, 2, 3], &eddsa::testing::public_key(&stored[0]));
}

#[test]
fn a_session_moves_3_of_4_to_2_of_3_with_a_node_leaving() {
    // Old a, b, c, d (3 of 4); a, b, c deal and stay (2 of 3); d leaves and
    // learns that the new version is confirmed.
    let stored = eddsa::testing::dealt(4, 3, false);
    let old: Vec<_> = stored.iter().map(|s| eddsa::reshare_source(s).unwrap()).collect();
    let new = NewCommittee::new(3, 2).unwrap();
    let roles = rounds::Roles { dealing: vec![Some(0), Some(1), Some(2), None], joining: vec![Some(0), Some(1), Some(2), None] };
    let (shares, left) = joined(run_rounds(&old, &[Some(0), Some(1), Some(2), Some(3)], &roles, &new));
    assert_eq!((shares.len(), left), (3, 1));
    assert_same_key(&old, &shares, &new);
    let new_stored: Vec<Zeroizing<Vec<u8>>> = shares.into_iter().map(|s| eddsa::reshared(s).unwrap()).collect();
    eddsa_sign_and_verify(&new_stored, &[1, 2], &eddsa::testing::public_key(&stored[0]));
}

#[test]
fn a_session_refuses_a_dealer_without_its_share() {
    // The plan says b deals but b holds nothing: b stops at once, naming
    // itself; the others then wait on it (a timeout in a real session).
    let stored = eddsa::testing::dealt(3, 2, false);
    let old: Vec<_> = stored.iter().map(|s| eddsa::reshare_source(s).unwrap()).collect();
    let new = NewCommittee::new(3, 2).unwrap();
    let roles = rounds::Roles { dealing: vec![Some(0), Some(1), None], joining: vec![Some(0), Some(1), Some(2)] };
    let names = committee(3);
    let outcome = round_based::sim::run(1, |_, party| {
        let setup =
            rounds::Setup { roles: &roles, new: &new, committee: &names, version: 2, old_key: rounds::OldKeySource::Own(old[1].old_key()), tamper: false };
        async move { rounds::run(party, 1, setup, None, &mut OsRng).await }
    });
    // One party alone in a simulator of one cannot reach round 1's
    // completion; what matters is that it refuses before sending.
    match outcome.map(|r| r.into_vec().pop()) {
        Ok(Some(Err(rounds::RoundsError::Reshare(ReshareError::NotMember { index: 1 })))) => {}
        Ok(Some(other)) => panic!("{:?}", other.err()),
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn a_session_blames_a_dealer_whose_sub_shares_do_not_check_and_nobody_keeps_a_share() {
    let stored = eddsa::testing::dealt(3, 2, false);
    let old: Vec<_> = stored.iter().map(|s| eddsa::reshare_source(s).unwrap()).collect();
    let new = NewCommittee::new(3, 2).unwrap();
    let roles = rounds::Roles { dealing: vec![Some(0), Some(1), Some(2)], joining: vec![Some(0), Some(1), Some(2)] };
    let names = committee(3);
    let outcomes = round_based::sim::run(3, |i, party| {
        let share = &old[usize::from(i)];
        // Old member 1 cheats.
        let setup =
            rounds::Setup { roles: &roles, new: &new, committee: &names, version: 2, old_key: rounds::OldKeySource::Own(share.old_key()), tamper: i == 1 };
        async move { rounds::run(party, i, setup, Some(share), &mut OsRng).await }
    })
    .unwrap()
    .into_vec();
    // The honest members refuse, blaming dealer 1 for its sub-share; the
    // cheater itself gets the honest dealers' values and the confirmation
    // round then fails for it: no party comes away with a share.
    for (i, outcome) in outcomes.into_iter().enumerate() {
        match (i, outcome) {
            (0 | 2, Err(rounds::RoundsError::Reshare(ReshareError::Dealer { dealer: 1, check: DealerCheck::SubShare }))) => {}
            (1, Err(_)) => {}
            (i, other) => panic!("party {i}: {:?}", other.err()),
        }
    }
}
