//! The confirmation digest: what every new member must agree on before the
//! new version is confirmed.

use super::{ChainCode, KeyShare};
use conclave_proto::NodeId;
use generic_ec::{Curve, NonZero, Point};
use sha2::{Digest, Sha256};

const DOMAIN: &[u8] = b"conclave/reshare/confirm/v1";

/// The public facts of a new key version that its members confirm.
pub struct Confirmation<'a, E: Curve> {
    /// The group public key (unchanged by resharing).
    pub public_key: Point<E>,
    /// The chain code (unchanged).
    pub chain_code: Option<ChainCode>,
    /// t'.
    pub threshold: u16,
    /// The new committee's node ids, in committee order.
    pub committee: &'a [NodeId],
    /// Every new member's public share, in committee order.
    pub public_shares: &'a [NonZero<Point<E>>],
    /// The new version.
    pub version: u64,
}

impl<'a, E: Curve> Confirmation<'a, E> {
    /// What `share`, held by a member of `committee`, is to be confirmed as
    /// `version`.
    pub fn of(share: &'a KeyShare<E>, committee: &'a [NodeId], version: u64) -> Self {
        Confirmation {
            public_key: *share.core.shared_public_key,
            chain_code: share.chain_code,
            threshold: share.core.min_signers(),
            committee,
            public_shares: &share.core.public_shares,
            version,
        }
    }

    /// SHA-256 over a domain tag, the curve's name and every field above,
    /// each length-prefixed (and lists counted) so that no two different
    /// inputs encode alike.
    ///
    /// Equal digests across all new members mean they hold shares of one
    /// polynomial under the unchanged key; that is what makes the dealers'
    /// commitments as good as broadcast: a dealer that showed different
    /// commitments to different members gives them different public shares.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        field(&mut h, DOMAIN);
        field(&mut h, E::CURVE_NAME.as_bytes());
        field(&mut h, &self.public_key.to_bytes(true));
        field(&mut h, self.chain_code.as_ref().map_or(&[][..], |c| &c[..]));
        field(&mut h, &self.threshold.to_be_bytes());
        field(&mut h, &(self.committee.len() as u64).to_be_bytes());
        for node in self.committee {
            field(&mut h, node.as_str().as_bytes());
        }
        field(&mut h, &(self.public_shares.len() as u64).to_be_bytes());
        for public_share in self.public_shares {
            field(&mut h, &public_share.to_bytes(true));
        }
        field(&mut h, &self.version.to_be_bytes());
        h.finalize().into()
    }
}

/// The confirmation digest of `share` as a member of `committee` at
/// `version` (see [`Confirmation::digest`]).
pub fn confirmation_digest<E: Curve>(share: &KeyShare<E>, committee: &[NodeId], version: u64) -> [u8; 32] {
    Confirmation::of(share, committee, version).digest()
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}
