//! The deal on the wire: one broadcast part (the commitments, sent signed to
//! every new member) and one part per recipient (its sub-share, sealed for
//! it by the end-to-end channel, [`crate::channel`]; nothing here encrypts).
//!
//! Both arrive from another enclave, but are decoded as hostile input: size
//! checked before parsing, unknown fields and versions refused, every point
//! and scalar decoded strictly for the expected curve. A dealer whose message
//! fails any of that is blamed ([`DealerCheck::Encoding`]); the channel has
//! already authenticated it as the sender.

use super::{ChainCode, DealerCheck, Dealt, OldKey, ReshareError, SubShare, MAX_PARTIES};
use crate::share::SecretShare;
use conclave_proto::codec::{self, DecodeError};
use generic_ec::serde::CurveName;
use generic_ec::{Curve, NonZero, Point, Scalar, SecretScalar};
use key_share::{DirtyKeyInfo, KeyInfo, VssSetup};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use zeroize::Zeroizing;

/// Largest commitments message: 256 commitments of at most 65 bytes in hex,
/// with room for the framing.
pub const MAX_COMMITMENTS_BYTES: usize = 64 * 1024;
/// Largest sub-share message.
pub const MAX_SUB_SHARE_BYTES: usize = 1024;
/// Largest old-key message: 256 public shares and 256 points, in hex.
pub const MAX_OLD_KEY_BYTES: usize = 128 * 1024;

/// One encoded point (compressed where the curve has a choice), scalar or
/// chain code, in hex.
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
        let bytes = Zeroizing::new(sub_share.0.as_ref().to_be_bytes().to_vec());
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

/// The old key's public facts, as every dealer sends them to the new
/// members that hold no share of it (they need them to check the
/// commitments against the old public shares).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OldKeyMessage {
    /// [`conclave_proto::PROTOCOL_VERSION`].
    pub v: u16,
    /// The curve's name.
    pub curve: String,
    public_key: PointBytes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    chain_code: Option<PointBytes>,
    threshold: u16,
    points: Vec<PointBytes>,
    public_shares: Vec<PointBytes>,
}

impl OldKeyMessage {
    /// The message for `old`.
    pub fn new<E: Curve>(old: &OldKey<E>) -> Result<Self, ReshareError> {
        let vss = old.info.vss_setup.as_ref().ok_or(ReshareError::NotThreshold)?;
        Ok(OldKeyMessage {
            v: conclave_proto::PROTOCOL_VERSION,
            curve: E::CURVE_NAME.to_owned(),
            public_key: PointBytes(old.info.shared_public_key.to_bytes(true).to_vec()),
            chain_code: old.chain_code.map(|c| PointBytes(c.to_vec())),
            threshold: vss.min_signers,
            points: vss.I.iter().map(|e| PointBytes(e.to_be_bytes().to_vec())).collect(),
            public_shares: old.info.public_shares.iter().map(|p| PointBytes(p.to_bytes(true).to_vec())).collect(),
        })
    }

    /// Its bytes.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("old keys serialise")
    }

    /// Parses untrusted bytes: size, shape and version only.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let m: OldKeyMessage = codec::decode_json("reshare old key", bytes, MAX_OLD_KEY_BYTES)?;
        codec::check_version("reshare old key", m.v)?;
        Ok(m)
    }

    /// The old key on `E`, if everything decodes and passes key-share
    /// validation (the public shares interpolate to the public key).
    pub fn old_key<E: Curve>(&self) -> Option<OldKey<E>> {
        if self.curve != E::CURVE_NAME || self.public_shares.len() > usize::from(MAX_PARTIES) {
            return None;
        }
        let point = |p: &PointBytes| Point::<E>::from_bytes(&p.0).ok().and_then(NonZero::from_point);
        let chain_code = match &self.chain_code {
            Some(c) => Some(ChainCode::try_from(c.0.as_slice()).ok()?),
            None => None,
        };
        let info = DirtyKeyInfo {
            curve: CurveName::new(),
            shared_public_key: point(&self.public_key)?,
            public_shares: self.public_shares.iter().map(point).collect::<Option<_>>()?,
            vss_setup: Some(VssSetup {
                min_signers: self.threshold,
                I: self.points.iter().map(|e| Scalar::from_be_bytes(&e.0).ok().and_then(NonZero::from_scalar)).collect::<Option<_>>()?,
            }),
            chain_code,
        };
        Some(OldKey { info: KeyInfo::validate(info).ok()?, chain_code })
    }
}

/// The old key as a new-only member may trust it: every dealer (old index,
/// as the channel authenticated the sender) sent a copy, each decodes to a
/// valid key with the public key and chain code the signed request names,
/// and all copies are the same. A copy that fails blames its dealer; copies
/// that are each plausible but differ blame nobody in particular.
pub fn agreed_old_key<E: Curve>(
    dealers: &[u16],
    copies: &BTreeMap<u16, Vec<u8>>,
    public_key: &Point<E>,
    chain_code: Option<ChainCode>,
) -> Result<OldKey<E>, ReshareError> {
    let blame = |dealer: u16, check: DealerCheck| ReshareError::Dealer { dealer, check };
    if let Some(&stranger) = copies.keys().find(|d| !dealers.contains(d)) {
        return Err(blame(stranger, DealerCheck::NotDealing));
    }
    let mut agreed: Option<(OldKeyMessage, OldKey<E>)> = None;
    for &dealer in dealers {
        let bytes = copies.get(&dealer).ok_or_else(|| blame(dealer, DealerCheck::Missing))?;
        let message = OldKeyMessage::decode(bytes).map_err(|_| blame(dealer, DealerCheck::Encoding))?;
        let old = message.old_key::<E>().ok_or_else(|| blame(dealer, DealerCheck::Encoding))?;
        if *old.info.shared_public_key != *public_key || old.chain_code != chain_code {
            return Err(blame(dealer, DealerCheck::OldKey));
        }
        match &agreed {
            Some((first, _)) if *first != message => return Err(ReshareError::OldKeyDisagreement),
            Some(_) => {}
            None => agreed = Some((message, old)),
        }
    }
    agreed.map(|(_, old)| old).ok_or(ReshareError::DealingSet)
}
