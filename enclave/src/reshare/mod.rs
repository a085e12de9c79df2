//! Resharing (issue 6): moves a key from an old committee (t of n) to a new
//! one (t' of n') under the same public key and chain code, without the key
//! ever existing in one place. Pure protocol core: no I/O; the session that
//! carries the messages, the channel that encrypts the per-recipient part and
//! the confirmation round live elsewhere.
//!
//! Protocol: redistribution of Shamir shares in the style of Desmedt and
//! Jajodia ("Redistributing secret shares to new access structures and its
//! applications", GMU tech. report ISSE-TR-97-01, 1997), made verifiable as
//! in Wong, Wang and Wing ("Verifiable secret redistribution for archive
//! systems", IEEE SISW 2002): every dealer re-shares its share with Feldman
//! VSS commitments, and the constant-term commitment is checked against the
//! dealer's public share from the old key.
//!
//! For a dealing set S of at least t old members with evaluation points
//! `I_i`, shares `x_i` and public shares `X_i = x_i·G`:
//!
//! 1. Dealer `i ∈ S` ([`deal()`]) samples `f_i` of degree `t'-1` with
//!    `f_i(0) = λ_{i,S}·x_i` (Lagrange at zero over S), broadcasts
//!    `C_ik = a_ik·G` for every coefficient, and sends `f_i(e_j)` to each new
//!    member `j` (evaluation point `e_j`) over the encrypted channel.
//! 2. New member `j` ([`receive()`]) checks, per dealer: `t'` commitments
//!    ([`DealerCheck::Length`]); `f_i(e_j)·G = Σ_k e_j^k·C_ik`
//!    ([`DealerCheck::SubShare`]); `C_i0 = λ_{i,S}·X_i`
//!    ([`DealerCheck::Commitment`]). Then `Σ_i C_i0 = pk`
//!    ([`ReshareError::PublicKeyChanged`]). Its new share is
//!    `x'_j = Σ_i f_i(e_j)`, every new public share is
//!    `X'_m = Σ_i Σ_k e_m^k·C_ik`, and the result must pass key-share
//!    validation with the old public key and chain code.
//! 3. Every new member computes [`confirmation_digest`]; the confirmation
//!    round compares them, which is what makes the commitments' broadcast
//!    consistent (a dealer that showed different commitments to different
//!    members makes their digests differ).
//!
//! Written once, over generic-ec 0.5 curves and key-share 0.7 shares (the
//! types givre uses); [`crate::ecdsa`] converts cggmp21's shares to and from
//! them by their canonical encodings.

mod confirm;
mod deal;
mod receive;
pub mod rounds;
pub mod stored;
pub mod wire;

#[cfg(test)]
mod tests;

pub use confirm::{confirmation_digest, Confirmation};
pub use deal::{deal, Deal, SubShare};
pub use receive::{receive, Dealt};

use generic_ec::{Curve, NonZero, Scalar};
use key_share::{CoreKeyShare, KeyInfo};

/// secp256k1 as resharing computes on it (ECDSA).
pub type Secp256k1 = generic_ec::curves::Secp256k1;
/// ed25519 as resharing computes on it (EdDSA).
pub type Ed25519 = generic_ec::curves::Ed25519;

/// BIP-32 / SLIP-10 chain code: public, part of the xpub, carried over
/// unchanged so that derived keys stay the same.
pub type ChainCode = [u8; 32];

/// The largest new threshold and committee this code accepts: far above any
/// real committee, low enough that hostile lengths cannot cost much.
pub const MAX_PARTIES: u16 = 256;

/// A key share as resharing sees it, whatever scheme it belongs to.
pub struct KeyShare<E: Curve> {
    /// The validated share (secret `x`, index `i`, public key info).
    pub core: CoreKeyShare<E>,
    /// The key's chain code, if it is an HD key.
    pub chain_code: Option<ChainCode>,
}

/// The public facts about the old key that a new member checks deals
/// against. A node of both committees takes them from its own sealed share;
/// a new-only member takes them from the dealers, through
/// [`wire::agreed_old_key`].
#[derive(Clone)]
pub struct OldKey<E: Curve> {
    /// Public key, public shares, evaluation points, threshold.
    pub info: KeyInfo<E>,
    /// Chain code, if any.
    pub chain_code: Option<ChainCode>,
}

impl<E: Curve> KeyShare<E> {
    /// The public half, as new members check it.
    pub fn old_key(&self) -> OldKey<E> {
        let info = KeyInfo::validate(self.core.key_info.clone()).expect("a valid share's key info is valid");
        OldKey { info, chain_code: self.chain_code }
    }
}

/// The new committee: threshold and evaluation points, the `j`-th point for
/// the `j`-th member in committee order (the order signing indexes use).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCommittee<E: Curve> {
    threshold: u16,
    points: Vec<NonZero<Scalar<E>>>,
}

impl<E: Curve> NewCommittee<E> {
    /// `n` members at points 1..=n, as both keygens place them, so reshared
    /// shares look like freshly generated ones.
    pub fn new(n: u16, threshold: u16) -> Result<Self, ReshareError> {
        if !(2..=MAX_PARTIES).contains(&n) || !(2..=n).contains(&threshold) {
            return Err(ReshareError::Committee { n, threshold });
        }
        let points = (1..=n).map(|j| NonZero::from_scalar(Scalar::from(j)).expect("1..=n is not zero")).collect();
        Ok(NewCommittee { threshold, points })
    }

    /// t': signers needed under the new shares.
    pub fn threshold(&self) -> u16 {
        self.threshold
    }

    /// n': number of new members.
    pub fn n(&self) -> u16 {
        self.points.len() as u16
    }

    fn point(&self, j: u16) -> Option<&NonZero<Scalar<E>>> {
        self.points.get(usize::from(j))
    }
}

/// Which check a dealer's values failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DealerCheck {
    /// No deal arrived from a member of the dealing set.
    Missing,
    /// A deal from an old member outside the dealing set.
    NotDealing,
    /// Not exactly t' commitments.
    Length,
    /// A commitment, sub-share or curve name that does not decode.
    Encoding,
    /// The sub-share does not match the commitments at this member's point.
    SubShare,
    /// The constant-term commitment is not λ·X_i: the dealer dealt something
    /// other than its share of the old key.
    Commitment,
    /// Its copy of the old key's public facts names another public key or
    /// chain code than the signed request.
    OldKey,
}

impl DealerCheck {
    /// Stable name, for logs and wire reasons.
    pub fn as_str(self) -> &'static str {
        match self {
            DealerCheck::Missing => "missing",
            DealerCheck::NotDealing => "not_dealing",
            DealerCheck::Length => "length",
            DealerCheck::Encoding => "encoding",
            DealerCheck::SubShare => "sub_share",
            DealerCheck::Commitment => "commitment",
            DealerCheck::OldKey => "old_key",
        }
    }
}

impl std::fmt::Display for DealerCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why resharing failed. [`ReshareError::Dealer`] blames one old member
/// (by its index in the old committee); the others blame nobody in
/// particular: bad parameters from the caller, or a failure that the checks
/// per dealer cannot pin on one of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReshareError {
    /// A dealer's values failed a check.
    #[error("dealer {dealer} failed the {check} check")]
    Dealer {
        /// Old-committee index of the dealer.
        dealer: u16,
        /// The check it failed.
        check: DealerCheck,
    },
    /// The new committee is out of range (2 <= t' <= n' <= 256).
    #[error("a new committee of {n} with threshold {threshold} is out of range")]
    Committee {
        /// n'.
        n: u16,
        /// t'.
        threshold: u16,
    },
    /// The dealing set is not strictly increasing old indexes, has fewer
    /// than t members, or the evaluation points repeat.
    #[error("the dealing set is not t or more distinct old members in order")]
    DealingSet,
    /// This node's index is not in the committee or dealing set it is
    /// acting for.
    #[error("this node is not member {index} of the committee it acts for")]
    NotMember {
        /// The index it claimed.
        index: u16,
    },
    /// The share has no polynomial (VSS) setup: additive shares are not
    /// produced by our keygens and cannot be re-dealt by Lagrange weights.
    #[error("the share is not a threshold (VSS) share")]
    NotThreshold,
    /// The constant terms do not add up to the group key even though every
    /// dealer passed its own checks (only possible if the old public shares
    /// used are not the old key's).
    #[error("the dealt key is not the group public key")]
    PublicKeyChanged,
    /// The dealers' copies of the old key each check but differ: one of
    /// them lies about the old public shares, and which cannot be told.
    #[error("the dealers disagree on the old key's public shares")]
    OldKeyDisagreement,
    /// The new share did not validate (a zero share or public share, which
    /// honest dealers produce with negligible probability).
    #[error("the new key share does not validate")]
    InvalidNewShare,
    /// A share from storage that does not decode or convert.
    #[error("the key share does not decode: {0}")]
    ShareEncoding(&'static str),
    /// This scheme's shares cannot hold a chain code, but the key has one.
    #[error("the key has a chain code this scheme's shares cannot hold")]
    ChainCodeUnsupported,
}

impl ReshareError {
    /// The old-committee index of the dealer to blame, if one is.
    pub fn blamed_dealer(&self) -> Option<u16> {
        match self {
            ReshareError::Dealer { dealer, .. } => Some(*dealer),
            _ => None,
        }
    }
}

/// λ_{i,S} for every dealer i of the dealing set S (in S's order), after
/// checking S against the old key: at least t strictly increasing old
/// indexes. Shared by both sides so that dealer and receiver weight shares
/// identically.
fn weights<E: Curve>(info: &key_share::DirtyKeyInfo<E>, dealers: &[u16]) -> Result<Vec<NonZero<Scalar<E>>>, ReshareError> {
    let vss = info.vss_setup.as_ref().ok_or(ReshareError::NotThreshold)?;
    let n = info.public_shares.len();
    let increasing = dealers.windows(2).all(|w| w[0] < w[1]);
    if !increasing || dealers.len() < usize::from(vss.min_signers) || dealers.iter().any(|&d| usize::from(d) >= n) {
        return Err(ReshareError::DealingSet);
    }
    let points: Vec<Scalar<E>> = dealers.iter().map(|&d| *vss.I[usize::from(d)]).collect();
    (0..dealers.len()).map(|k| generic_ec_zkp::polynomial::lagrange_coefficient_at_zero(k, &points).ok_or(ReshareError::DealingSet)).collect()
}
