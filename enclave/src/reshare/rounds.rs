//! The resharing session as round-based rounds, for every party of it: the
//! dealers (t old members) and the new committee, a node possibly being
//! both. Three rounds, every party sending in each (an empty message where
//! it has nothing to say, so that every round waits for everyone and a
//! silent party is a timeout, not a hang):
//!
//! 1. broadcast: a dealer's commitments and its copy of the old key's
//!    public facts ([`wire::CommitmentsMessage`], [`wire::OldKeyMessage`]);
//! 2. point to point: a dealer's sub-share for each new member (sealed for
//!    it by the session's channel);
//! 3. broadcast: each new member's [`confirmation_digest`] of the new key
//!    version. Everyone checks that all new members confirmed the same
//!    digest: the commitments were sent to each member separately, so this
//!    is what shows they all saw the same ones. Only then does anyone keep
//!    the new share or retire the old one.
//!
//! Which party deals and which joins comes from the caller (the signed
//! request and the plan), never from the messages; a sender is known by the
//! index the channel authenticated.

use super::wire::{self, CommitmentsMessage, OldKeyMessage, SubShareMessage};
use super::{confirmation_digest, deal, receive, ChainCode, DealerCheck, Dealt, KeyShare, NewCommittee, OldKey, ReshareError};
use conclave_proto::NodeId;
use futures::SinkExt;
use generic_ec::{Curve, Point};
use rand_core::{CryptoRng, RngCore};
use round_based::rounds_router::simple_store::RoundInput;
use round_based::rounds_router::RoundsRouter;
use round_based::{Delivery, Mpc, MpcParty, Outgoing, ProtocolMessage};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// The session's messages.
#[derive(Clone, Debug, ProtocolMessage, Serialize, Deserialize)]
pub enum Msg {
    /// Round 1.
    Deal(DealMsg),
    /// Round 2.
    SubShare(SubShareMsg),
    /// Round 3.
    Confirm(ConfirmMsg),
}

/// Round 1: a dealer's commitments and old-key facts (encoded by
/// [`wire`]); nothing from a party that does not deal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DealMsg {
    commitments: Option<Vec<u8>>,
    old_key: Option<Vec<u8>>,
}

/// Round 2: a dealer's sub-share for the recipient, if it is a new member.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubShareMsg {
    sub_share: Option<SubShareBytes>,
}

/// An encoded sub-share: zeroized on drop (every copy), never printed.
#[derive(Clone, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct SubShareBytes(#[serde(with = "conclave_proto::codec::b64")] Vec<u8>);

impl std::fmt::Debug for SubShareMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SubShareMsg(..)")
    }
}

/// Round 3: a new member's confirmation digest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmMsg {
    digest: Option<[u8; 32]>,
}

/// Who does what in the session, by session index (the same at every
/// party: it comes from the signed request and the plan).
#[derive(Clone, Debug)]
pub struct Roles {
    /// Per party, its index in the old committee if it deals.
    pub dealing: Vec<Option<u16>>,
    /// Per party, its index in the new committee if it joins it.
    pub joining: Vec<Option<u16>>,
}

impl Roles {
    fn dealers(&self) -> Vec<u16> {
        let mut dealers: Vec<u16> = self.dealing.iter().flatten().copied().collect();
        dealers.sort();
        dealers
    }
}

/// Where a party takes the old key's public facts from.
pub enum OldKeySource<E: Curve> {
    /// Its own share of the old key.
    Own(OldKey<E>),
    /// The dealers' copies, which must agree and name this public key and
    /// chain code (from the signed request).
    Dealers {
        /// The wallet's public key.
        public_key: Point<E>,
        /// Its chain code, if any.
        chain_code: Option<ChainCode>,
    },
}

/// What the session knows besides the roles.
pub struct Setup<'a, E: Curve> {
    /// Who deals and who joins.
    pub roles: &'a Roles,
    /// The new committee's threshold and points.
    pub new: &'a NewCommittee<E>,
    /// The new committee's node ids, in committee order (for the digest).
    pub committee: &'a [NodeId],
    /// The version the new shares are sealed as.
    pub version: u64,
    /// The old key's public facts.
    pub old_key: OldKeySource<E>,
    /// Fault injection for tests (dev mode only): as a dealer, send
    /// sub-shares off by one, which every member must refuse.
    pub tamper: bool,
}

/// What a party comes away with.
pub enum Reshared<E: Curve> {
    /// It is in the new committee: its new share.
    Joined(KeyShare<E>),
    /// It is not: the new version is confirmed, its old share can go.
    Left,
}

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
pub enum RoundsError {
    /// A dealer's values did not check (`dealer` is its old index).
    #[error(transparent)]
    Reshare(#[from] ReshareError),
    /// A party sent what its role does not send.
    #[error("party {party} sent {what}, which its role does not send")]
    OutOfRole {
        /// Session index.
        party: u16,
        /// What it sent.
        what: &'static str,
    },
    /// A new member confirmed another version of the key than this party
    /// computed, or none: the members did not all see the same deals.
    #[error("party {party} confirmed another key version than this party's")]
    Confirmation {
        /// Session index.
        party: u16,
    },
    /// The transport failed.
    #[error("{0}")]
    Transport(String),
}

/// Runs this party's side of the session: party `i` of `n`, `share` its
/// share of the old key if it deals.
pub async fn run<E: Curve, M>(
    party: M,
    i: u16,
    setup: Setup<'_, E>,
    share: Option<&KeyShare<E>>,
    rng: &mut (impl RngCore + CryptoRng),
) -> Result<Reshared<E>, RoundsError>
where
    M: Mpc<ProtocolMessage = Msg>,
{
    let n = setup.roles.dealing.len() as u16;
    let transport = |e: &dyn std::fmt::Display| RoundsError::Transport(e.to_string());
    let MpcParty { delivery, .. } = party.into_party();
    let (incoming, mut outgoing) = delivery.split();
    let mut router = RoundsRouter::<Msg>::builder();
    let round1 = router.add_round(RoundInput::<DealMsg>::broadcast(i, n));
    let round2 = router.add_round(RoundInput::<SubShareMsg>::p2p(i, n));
    let round3 = router.add_round(RoundInput::<ConfirmMsg>::broadcast(i, n));
    let mut router = router.listen(incoming);
    let dealers = setup.roles.dealers();
    let role = |party: u16| (setup.roles.dealing[usize::from(party)], setup.roles.joining[usize::from(party)]);
    let (my_dealing, my_joining) = role(i);

    // Round 1: deal.
    let my_deal = match (my_dealing, share) {
        (Some(_), Some(share)) => Some(deal(share, &dealers, setup.new, rng)?),
        (Some(index), None) => return Err(ReshareError::NotMember { index }.into()),
        (None, _) => None,
    };
    let old_key_copy = match (&my_deal, share) {
        (Some(_), Some(share)) => Some(OldKeyMessage::new(&share.old_key())?.encode()),
        _ => None,
    };
    let broadcast = DealMsg { commitments: my_deal.as_ref().map(|d| CommitmentsMessage::new(&d.commitments).encode()), old_key: old_key_copy };
    outgoing.send(Outgoing::broadcast(Msg::Deal(broadcast.clone()))).await.map_err(|e| transport(&e))?;
    let deals = router.complete(round1).await.map_err(|e| transport(&e))?;
    let mut commitments = BTreeMap::new();
    let mut copies = BTreeMap::new();
    // Mine first, then the others' by their authenticated index.
    for (from, msg) in std::iter::once((i, broadcast)).chain(deals.into_iter_indexed().map(|(from, _, m)| (from, m))) {
        match (role(from).0, msg.commitments, msg.old_key) {
            (Some(dealer), Some(c), Some(k)) => {
                commitments.insert(dealer, c);
                copies.insert(dealer, k);
            }
            (Some(dealer), _, _) => return Err(ReshareError::Dealer { dealer, check: DealerCheck::Missing }.into()),
            (None, None, None) => {}
            (None, _, _) => return Err(RoundsError::OutOfRole { party: from, what: "a deal" }),
        }
    }

    // Round 2: sub-shares to the new members.
    let mut mine = None;
    for to in 0..n {
        let sub_share = match (&my_deal, role(to).1) {
            (Some(d), Some(j)) => {
                let sub_share = &d.sub_shares[usize::from(j)];
                let encoded = match crate::fault::ENABLED && setup.tamper {
                    true => SubShareMessage::new(&sub_share.off_by_one()).encode(),
                    false => SubShareMessage::new(sub_share).encode(),
                };
                Some(SubShareBytes(encoded.to_vec()))
            }
            _ => None,
        };
        if to == i {
            mine = sub_share;
        } else {
            outgoing.send(Outgoing::p2p(to, Msg::SubShare(SubShareMsg { sub_share }))).await.map_err(|e| transport(&e))?;
        }
    }
    let received = router.complete(round2).await.map_err(|e| transport(&e))?;
    let mut sub_shares = BTreeMap::new();
    for (from, sub_share) in std::iter::once((i, mine)).chain(received.into_iter_indexed().map(|(from, _, m)| (from, m.sub_share))) {
        match (role(from).0, my_joining, sub_share) {
            (Some(dealer), Some(_), Some(s)) => {
                sub_shares.insert(dealer, s);
            }
            (Some(dealer), Some(_), None) => return Err(ReshareError::Dealer { dealer, check: DealerCheck::Missing }.into()),
            (_, _, None) => {}
            (_, _, Some(_)) => return Err(RoundsError::OutOfRole { party: from, what: "a sub-share" }),
        }
    }

    // This member's new share, and its digest.
    let new_share = match my_joining {
        Some(j) => {
            let old = match setup.old_key {
                OldKeySource::Own(old) => old,
                OldKeySource::Dealers { public_key, chain_code } => wire::agreed_old_key(&dealers, &copies, &public_key, chain_code)?,
            };
            let mut dealt: BTreeMap<u16, Dealt<E>> = BTreeMap::new();
            for (dealer, c) in &commitments {
                let s = sub_shares.get(dealer).ok_or(ReshareError::Dealer { dealer: *dealer, check: DealerCheck::Missing })?;
                dealt.insert(*dealer, wire::dealt(*dealer, c, &s.0)?);
            }
            Some(receive(&old, &dealers, setup.new, j, &dealt)?)
        }
        None => None,
    };

    // Round 3: confirm.
    let my_digest = new_share.as_ref().map(|s| confirmation_digest(s, setup.committee, setup.version));
    outgoing.send(Outgoing::broadcast(Msg::Confirm(ConfirmMsg { digest: my_digest }))).await.map_err(|e| transport(&e))?;
    let confirmations = router.complete(round3).await.map_err(|e| transport(&e))?;
    let mut agreed = my_digest;
    for (from, msg) in confirmations.into_iter_indexed().map(|(from, _, m)| (from, m)) {
        match (role(from).1, msg.digest) {
            (Some(_), Some(digest)) if *agreed.get_or_insert(digest) == digest => {}
            (Some(_), _) => return Err(RoundsError::Confirmation { party: from }),
            (None, None) => {}
            (None, Some(_)) => return Err(RoundsError::OutOfRole { party: from, what: "a confirmation" }),
        }
    }
    Ok(match new_share {
        Some(share) => Reshared::Joined(share),
        None => Reshared::Left,
    })
}
