//! The deal on the wire: one broadcast part (the commitments, sent signed to
//! every new member) and one part per recipient (its sub-share, sealed for
//! it by the end-to-end channel, [`crate::channel`]; nothing here encrypts).
//!
//! Both arrive from another enclave, but are decoded as hostile input: size
//! checked before parsing, unknown fields and versions refused, every point
//! and scalar decoded strictly for the expected curve. A dealer whose message
//! fails any of that is blamed ([`DealerCheck::Encoding`]); the channel has
//! already authenticated it as the sender.

use super::{DealerCheck, Dealt, ReshareError, SubShare, MAX_PARTIES};
use crate::share::SecretShare;
use conclave_proto::codec::{self, DecodeError};
use generic_ec::{Curve, Point, SecretScalar};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Largest commitments message: 256 commitments of at most 65 bytes in hex,
/// with room for the framing.
pub const MAX_COMMITMENTS_BYTES: usize = 64 * 1024;
/// Largest sub-share message.
pub const MAX_SUB_SHARE_BYTES: usize = 1024;

/// One encoded point (compressed where the curve has a choice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
struct PointBytes(#[serde(with = "codec::hex_bytes")] Vec<u8>);

/// A dealer's broadcast: its Feldman commitments, constant term first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitmentsMessage {
    /// [`conclave_proto::PROTOCOL_VERSION`].
    pub v: u16,
    /// The curve's name (generic-ec's), so a deal for one scheme is never
    /// read as the other's.
    pub curve: String,
    commitments: Vec<PointBytes>,
}

/// A dealer's sub-share for one new member. Secret: not printable, zeroized
/// on drop; its encoding is only ever handed to the channel.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubShareMessage {
    /// [`conclave_proto::PROTOCOL_VERSION`].
    pub v: u16,
    /// The curve's name.
    pub curve: String,
    sub_share: SecretShare,
}

impl CommitmentsMessage {
    /// The message for `commitments`.
    pub fn new<E: Curve>(commitments: &[Point<E>]) -> Self {
        CommitmentsMessage {
            v: conclave_proto::PROTOCOL_VERSION,
            curve: E::CURVE_NAME.to_owned(),
            commitments: commitments.iter().map(|c| PointBytes(c.to_bytes(true).to_vec())).collect(),
        }
    }

    /// Its bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("commitments serialise")
    }

    /// Parses untrusted bytes: size, shape and version only.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let m: CommitmentsMessage = codec::decode_json("reshare commitments", bytes, MAX_COMMITMENTS_BYTES)?;
        codec::check_version("reshare commitments", m.v)?;
        Ok(m)
    }

    /// The commitments as points of `E`; `None` if the curve differs, there
    /// are more than [`MAX_PARTIES`], or any does not decode.
    pub fn points<E: Curve>(&self) -> Option<Vec<Point<E>>> {
        if self.curve != E::CURVE_NAME || self.commitments.len() > usize::from(MAX_PARTIES) {
            return None;
        }
        self.commitments.iter().map(|c| Point::from_bytes(&c.0).ok()).collect()
    }
}

impl SubShareMessage {
    /// The message for one sub-share.
    pub fn new<E: Curve>(sub_share: &SubShare<E>) -> Self {
        let bytes = Zeroizing::new(sub_share.0.to_be_bytes().as_nonsecret_bytes().to_vec());
        SubShareMessage { v: conclave_proto::PROTOCOL_VERSION, curve: E::CURVE_NAME.to_owned(), sub_share: SecretShare::new(bytes) }
    }

    /// Its bytes, for the channel to seal.
    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(serde_json::to_vec(self).expect("sub-shares serialise"))
    }

    /// Parses untrusted bytes: size, shape and version only.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let m: SubShareMessage = codec::decode_json("reshare sub-share", bytes, MAX_SUB_SHARE_BYTES)?;
        codec::check_version("reshare sub-share", m.v)?;
        Ok(m)
    }

    /// The sub-share as a scalar of `E`; `None` if the curve differs or the
    /// bytes are not a canonical scalar.
    pub fn sub_share<E: Curve>(&self) -> Option<SubShare<E>> {
        if self.curve != E::CURVE_NAME {
            return None;
        }
        SecretScalar::from_be_bytes(self.sub_share.expose()).ok().map(SubShare)
    }
}

/// Decodes what `dealer` (its old index, as the channel authenticated the
/// sender) sent this member: its broadcast and the sub-share for this
/// member. Anything wrong with either blames the dealer.
pub fn dealt<E: Curve>(dealer: u16, commitments: &[u8], sub_share: &[u8]) -> Result<Dealt<E>, ReshareError> {
    let encoding = ReshareError::Dealer { dealer, check: DealerCheck::Encoding };
    let commitments = CommitmentsMessage::decode(commitments).ok().and_then(|m| m.points()).ok_or_else(|| encoding.clone())?;
    let sub_share = SubShareMessage::decode(sub_share).ok().and_then(|m| m.sub_share()).ok_or(encoding)?;
    Ok(Dealt { commitments, sub_share })
}
