//! The new member's side: check every dealer's values, then add them up into
//! a new key share (Wong-Wang-Wing verification of a Desmedt-Jajodia
//! redistribution, see the module above).

use super::{weights, DealerCheck, KeyShare, NewCommittee, OldKey, ReshareError, SubShare};
use generic_ec::serde::CurveName;
use generic_ec::{Curve, NonZero, Point, Scalar, SecretScalar};
use key_share::{DirtyCoreKeyShare, DirtyKeyInfo, Validate, VssSetup};
use std::collections::BTreeMap;

/// One dealer's values as they reached this member: its broadcast
/// commitments and the sub-share addressed to this member.
pub struct Dealt<E: Curve> {
    /// `C_ik`, as broadcast.
    pub commitments: Vec<Point<E>>,
    /// `f_i(e_j)` for this member.
    pub sub_share: SubShare<E>,
}

/// `Σ_k x^k·C_k`: what the committed polynomial is worth at `x`, in the
/// exponent (Horner).
fn committed_value<E: Curve>(commitments: &[Point<E>], x: &Scalar<E>) -> Point<E> {
    commitments.iter().rev().fold(Point::zero(), |acc, c| acc * x + c)
}

/// Checks the deals of every member of `dealers` (old indexes, strictly
/// increasing; `deals` keyed by the sender's old index, taken from the
/// authenticated channel, never from the message) and builds this member's
/// new share, member `me` of `new`.
pub fn receive<E: Curve>(
    old: &OldKey<E>,
    dealers: &[u16],
    new: &NewCommittee<E>,
    me: u16,
    deals: &BTreeMap<u16, Dealt<E>>,
) -> Result<KeyShare<E>, ReshareError> {
    let e_me = *new.point(me).ok_or(ReshareError::NotMember { index: me })?;
    let blame = |dealer: u16, check: DealerCheck| ReshareError::Dealer { dealer, check };
    if let Some(&stranger) = deals.keys().find(|d| !dealers.contains(d)) {
        return Err(blame(stranger, DealerCheck::NotDealing));
    }
    let weights = weights(&old.info, dealers)?;
    let mut constant_terms = Point::zero();
    for (&dealer, lambda) in dealers.iter().zip(weights) {
        let dealt = deals.get(&dealer).ok_or_else(|| blame(dealer, DealerCheck::Missing))?;
        if dealt.commitments.len() != usize::from(new.threshold()) {
            return Err(blame(dealer, DealerCheck::Length));
        }
        if Point::generator() * &dealt.sub_share.0 != committed_value(&dealt.commitments, &e_me) {
            return Err(blame(dealer, DealerCheck::SubShare));
        }
        let public_share = old.info.public_shares[usize::from(dealer)].into_inner();
        if dealt.commitments[0] != public_share * lambda.into_inner() {
            return Err(blame(dealer, DealerCheck::Commitment));
        }
        constant_terms += dealt.commitments[0];
    }
    if constant_terms != *old.info.shared_public_key {
        return Err(ReshareError::PublicKeyChanged);
    }

    let mut sum = Scalar::<E>::zero();
    for dealer in dealers {
        sum += &deals[dealer].sub_share.0;
    }
    let x = NonZero::from_secret_scalar(SecretScalar::new(&mut sum)).ok_or(ReshareError::InvalidNewShare)?;
    let public_shares = new
        .points
        .iter()
        .map(|e_m| {
            let x_m = dealers.iter().map(|d| committed_value(&deals[d].commitments, e_m)).sum::<Point<E>>();
            NonZero::from_point(x_m).ok_or(ReshareError::InvalidNewShare)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let share = DirtyCoreKeyShare {
        i: me,
        key_info: DirtyKeyInfo {
            curve: CurveName::new(),
            shared_public_key: old.info.shared_public_key,
            public_shares,
            vss_setup: Some(VssSetup { min_signers: new.threshold(), I: new.points.clone() }),
            chain_code: old.chain_code,
        },
        x,
    };
    let core = share.validate().map_err(|_| ReshareError::InvalidNewShare)?;
    Ok(KeyShare { core, chain_code: old.chain_code })
}
