//! The dealer's side: an old member re-shares its Lagrange-weighted share to
//! the new committee (Desmedt-Jajodia redistribution with Feldman
//! commitments, see the module above).

use super::{weights, KeyShare, NewCommittee, ReshareError};
use generic_ec::{Curve, Point, Scalar, SecretScalar};
use generic_ec_zkp::polynomial::Polynomial;
use rand_core::{CryptoRng, RngCore};

/// One sub-share `f_i(e_j)`, for one new member. Secret: zeroized on drop,
/// never printed, never cloned.
pub struct SubShare<E: Curve>(pub(super) SecretScalar<E>);

impl<E: Curve> std::fmt::Debug for SubShare<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubShare(..)")
    }
}

impl<E: Curve> SubShare<E> {
    /// This sub-share plus one: what a cheating dealer sends (fault
    /// injection and tests).
    pub(crate) fn off_by_one(&self) -> SubShare<E> {
        let mut shifted = *self.0.as_ref() + Scalar::one();
        SubShare(SecretScalar::new(&mut shifted))
    }
}

/// What one dealer sends: the commitments to every member (broadcast,
/// signed) and one sub-share per new member (point to point, encrypted).
pub struct Deal<E: Curve> {
    /// `C_k = a_k·G` for each coefficient of the dealer's polynomial.
    pub commitments: Vec<Point<E>>,
    /// `sub_shares[j]` is for the `j`-th new member.
    pub sub_shares: Vec<SubShare<E>>,
}

/// Deals this node's share (old index `share.core.i`, which must be in the
/// strictly increasing dealing set `dealers`) to `new`.
pub fn deal<E: Curve>(share: &KeyShare<E>, dealers: &[u16], new: &NewCommittee<E>, rng: &mut (impl RngCore + CryptoRng)) -> Result<Deal<E>, ReshareError> {
    let core = &share.core;
    let weights = weights(&core.key_info, dealers)?;
    let position = dealers.iter().position(|&d| d == core.i).ok_or(ReshareError::NotMember { index: core.i })?;
    let lambda = weights[position];
    let mut weighted: Scalar<E> = lambda.into_inner() * &core.x;
    let constant = SecretScalar::new(&mut weighted);
    let degree = usize::from(new.threshold()) - 1;
    let f = Polynomial::<SecretScalar<E>>::sample_with_const_term(rng, degree, constant);
    let commitments = f.coefs().iter().map(|a| Point::generator() * a).collect();
    let sub_shares = (0..new.n())
        .map(|j| {
            let e_j = new.point(j).expect("j < n");
            let mut s: Scalar<E> = f.value(&**e_j);
            SubShare(SecretScalar::new(&mut s))
        })
        .collect();
    Ok(Deal { commitments, sub_shares })
}
