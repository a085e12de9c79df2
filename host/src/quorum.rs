//! Who takes part in a session: the first quorum of a request, the next one
//! after a failure, and when a participant counts as gone. Pure functions of
//! the request, the wallet's record and this host's view of who is ready;
//! `coordinator` and `lifecycle` feed them and act on the answer.

use conclave_proto::{ErrorCode, NodeId, RequestError, RequestId};
use std::collections::HashSet;

/// What a follower needs to know about the request to choose a quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quorum {
    /// The wallet's committee, in protocol order (keygen and reshare: the
    /// session's participants).
    pub committee: Vec<NodeId>,
    /// Signers needed (keygen and reshare: every participant).
    pub threshold: usize,
    /// Whether another quorum may be chosen: not for keygen or reshare
    /// (they need every participant) nor for a request that names its
    /// signers.
    pub may_fail_over: bool,
}

impl Quorum {
    /// A session that needs every one of `participants` (keygen, reshare).
    pub fn everyone(participants: &[NodeId]) -> Quorum {
        Quorum { committee: participants.to_vec(), threshold: participants.len(), may_fail_over: false }
    }
}

/// A sign request's first signers: the ones it names, which must be exactly
/// `threshold` distinct members of the committee, or else `threshold` ready members
/// taken in turn from a place in the ready list that the request id picks,
/// so that every ready member carries its share of the signatures (always
/// the first `threshold` would leave the others idle). Returned in
/// committee order, the protocol's.
pub fn first_signers(
    committee: &[NodeId],
    threshold: usize,
    named: Option<&[NodeId]>,
    ready: &HashSet<NodeId>,
    request: &RequestId,
) -> Result<Vec<NodeId>, RequestError> {
    if let Some(named) = named {
        let distinct: HashSet<&NodeId> = named.iter().collect();
        if named.len() != threshold || distinct.len() != named.len() || named.iter().any(|n| !committee.contains(n)) {
            return Err(RequestError::new(ErrorCode::InvalidSigners, format!("signers must be exactly {threshold} members of the committee {committee:?}")));
        }
        let mut named = named.to_vec();
        named.sort_by_key(|n| committee.iter().position(|c| c == n));
        return Ok(named);
    }
    let live: Vec<&NodeId> = committee.iter().filter(|n| ready.contains(*n)).collect();
    if live.len() < threshold {
        return Err(RequestError::new(ErrorCode::InsufficientPeers, format!("{} of the committee are ready, {threshold} are needed", live.len())));
    }
    let start = (turn(request) % live.len() as u64) as usize;
    let mut chosen: Vec<NodeId> = (0..threshold).map(|k| live[(start + k) % live.len()].clone()).collect();
    chosen.sort_by_key(|n| committee.iter().position(|c| c == n));
    Ok(chosen)
}

/// Every signer set [`first_signers`] can choose among `ready` members
/// when a request names none (one per place its turn can start), each in
/// committee order: the sets presignature pools are kept for.
pub fn rotation_sets(committee: &[NodeId], threshold: usize, ready: &HashSet<NodeId>) -> Vec<Vec<NodeId>> {
    let live: Vec<&NodeId> = committee.iter().filter(|n| ready.contains(*n)).collect();
    if live.len() < threshold || threshold == 0 {
        return Vec::new();
    }
    let mut sets: Vec<Vec<NodeId>> = (0..live.len())
        .map(|start| {
            let mut set: Vec<NodeId> = (0..threshold).map(|k| live[(start + k) % live.len()].clone()).collect();
            set.sort_by_key(|n| committee.iter().position(|c| c == n));
            set
        })
        .collect();
    sets.sort();
    sets.dedup();
    sets
}

/// Where a request's turn starts: FNV-1a of its id. The same on every host
/// and build (any host may plan the first attempt), spread evenly over
/// random ids; a client that picks ids to load one node only loads the
/// nodes it may use anyway.
fn turn(request: &RequestId) -> u64 {
    request.as_str().bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// A reshare's participants, sorted: every ready member of the old
/// committee (each deals; at least the old threshold must be ready) and
/// every member of the new one (all must be ready).
pub fn reshare_participants(
    old_committee: &[NodeId],
    old_threshold: usize,
    new_committee: &[NodeId],
    ready: &HashSet<NodeId>,
) -> Result<Vec<NodeId>, RequestError> {
    if let Some(absent) = new_committee.iter().find(|n| !ready.contains(*n)) {
        return Err(RequestError::new(ErrorCode::InsufficientPeers, format!("{absent} of the new committee is not ready")));
    }
    let dealers: Vec<NodeId> = old_committee.iter().filter(|n| ready.contains(*n)).cloned().collect();
    if dealers.len() < old_threshold {
        return Err(RequestError::new(
            ErrorCode::InsufficientPeers,
            format!("{} of the committee are ready, {old_threshold} are needed to deal", dealers.len()),
        ));
    }
    let mut participants: Vec<NodeId> = dealers.into_iter().chain(new_committee.iter().cloned()).collect();
    participants.sort();
    participants.dedup();
    Ok(participants)
}

/// Failures that another quorum can get past: a named participant went
/// away, failed attestation, fell silent or misbehaved.
pub fn replaceable(error: &RequestError) -> bool {
    matches!(error.code, ErrorCode::PeerUnavailable | ErrorCode::PeerUnattested | ErrorCode::Timeout | ErrorCode::ProtocolAbort) && !error.blamed.is_empty()
}

/// Every node blamed so far: the earlier exclusions, oldest first, then
/// the newly blamed.
pub fn excluded_after(excluded: &[NodeId], blamed: &[NodeId]) -> Vec<NodeId> {
    let mut all = excluded.to_vec();
    for node in blamed {
        if !all.contains(node) {
            all.push(node.clone());
        }
    }
    all
}

/// The next attempt's signers, in committee order, or `None` if no quorum
/// is left. Members never blamed come first; then blamed ones that still
/// heartbeat, oldest blame first (a lost message blames a healthy peer
/// too), but never one blamed by the failure being replaced. The request's
/// deadline bounds the retries.
pub fn next_signers(quorum: &Quorum, excluded: &[NodeId], blamed_now: &[NodeId], ready: &HashSet<NodeId>) -> Option<Vec<NodeId>> {
    if !quorum.may_fail_over {
        return None;
    }
    let fresh = quorum.committee.iter().filter(|n| ready.contains(*n) && !excluded.contains(*n));
    let forgiven = excluded.iter().filter(|n| ready.contains(*n) && quorum.committee.contains(n) && !blamed_now.contains(n));
    let mut chosen: Vec<NodeId> = fresh.chain(forgiven).take(quorum.threshold).cloned().collect();
    if chosen.len() < quorum.threshold {
        return None;
    }
    chosen.sort_by_key(|n| quorum.committee.iter().position(|c| c == n));
    Some(chosen)
}

/// Participants missing from the ready set at two checks in a row (one
/// late heartbeat of a busy node is not a failure). Returns those missing
/// now, to pass to the next check, and those gone.
pub fn gone(participants: &[NodeId], ready: &HashSet<NodeId>, missing_before: &[NodeId]) -> (Vec<NodeId>, Vec<NodeId>) {
    let missing: Vec<NodeId> = participants.iter().filter(|p| !ready.contains(*p)).cloned().collect();
    let gone = missing.iter().filter(|p| missing_before.contains(*p)).cloned().collect();
    (missing, gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(ids: &[u8]) -> Vec<NodeId> {
        ids.iter().map(|i| NodeId::new(format!("node-{i}")).unwrap()).collect()
    }

    fn set(ids: &[u8]) -> HashSet<NodeId> {
        nodes(ids).into_iter().collect()
    }

    fn signing(committee: &[u8], threshold: usize) -> Quorum {
        Quorum { committee: nodes(committee), threshold, may_fail_over: true }
    }

    fn request(i: usize) -> RequestId {
        RequestId::new(format!("{i:032x}")).unwrap()
    }

    #[test]
    fn first_signers_are_ready_members_in_committee_order() {
        let committee = nodes(&[1, 2, 3]);
        for i in 0..50 {
            let chosen = first_signers(&committee, 2, None, &set(&[1, 2, 3]), &request(i)).unwrap();
            assert_eq!(chosen.len(), 2);
            assert!(chosen.windows(2).all(|w| w[0] < w[1]), "committee order, distinct: {chosen:?}");
            // With node-2 down, the one pair left.
            assert_eq!(first_signers(&committee, 2, None, &set(&[3, 1]), &request(i)).unwrap(), nodes(&[1, 3]));
        }
        // Ready nodes outside the committee do not count.
        let short = first_signers(&committee, 2, None, &set(&[3, 4, 5]), &request(0)).unwrap_err();
        assert_eq!(short.code, ErrorCode::InsufficientPeers);
    }

    #[test]
    fn every_ready_member_carries_its_share_of_the_requests() {
        let committee = nodes(&[1, 2, 3, 4, 5]);
        let ready = set(&[1, 2, 3, 4, 5]);
        let mut load = std::collections::BTreeMap::<NodeId, usize>::new();
        let requests = 600;
        for i in 0..requests {
            for signer in first_signers(&committee, 3, None, &ready, &request(i)).unwrap() {
                *load.entry(signer).or_default() += 1;
            }
        }
        // 600 requests x 3 signers over 5 nodes: 360 each if even.
        for node in &committee {
            let carried = load.get(node).copied().unwrap_or(0);
            assert!((300..=420).contains(&carried), "{node} carried {carried} of {}: {load:?}", requests * 3);
        }
        // The same request gets the same signers from any host.
        assert_eq!(first_signers(&committee, 3, None, &ready, &request(7)).unwrap(), first_signers(&committee, 3, None, &ready, &request(7)).unwrap());
    }

    #[test]
    fn named_signers_must_be_exactly_threshold_distinct_members() {
        let committee = nodes(&[1, 2, 3]);
        // Named signers are taken, ready or not (the request said so), in
        // committee order: the protocol's, and the order a pool's signer
        // set is named in (its keeper is the first).
        assert_eq!(first_signers(&committee, 2, Some(&nodes(&[3, 1])), &set(&[]), &request(0)).unwrap(), nodes(&[1, 3]));
        for named in [nodes(&[1]), nodes(&[1, 2, 3]), nodes(&[1, 4]), nodes(&[2, 2])] {
            let e = first_signers(&committee, 2, Some(&named), &set(&[1, 2, 3, 4]), &request(0)).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidSigners, "{named:?}");
        }
    }

    #[test]
    fn a_reshare_needs_every_new_member_and_the_old_threshold_ready() {
        let participants = reshare_participants(&nodes(&[1, 2, 3]), 2, &nodes(&[2, 3, 4]), &set(&[1, 2, 3, 4])).unwrap();
        assert_eq!(participants, nodes(&[1, 2, 3, 4]), "every ready old member deals, once");
        let without_dealer = reshare_participants(&nodes(&[1, 2, 3]), 2, &nodes(&[2, 3, 4]), &set(&[2, 3, 4])).unwrap();
        assert_eq!(without_dealer, nodes(&[2, 3, 4]), "an absent leaving member is not needed");
        let e = reshare_participants(&nodes(&[1, 2, 3]), 2, &nodes(&[2, 3, 4]), &set(&[1, 2, 3])).unwrap_err();
        assert_eq!((e.code, e.reason.contains("node-4")), (ErrorCode::InsufficientPeers, true), "{e}");
        let e = reshare_participants(&nodes(&[1, 2, 3]), 3, &nodes(&[1, 2]), &set(&[1, 2])).unwrap_err();
        assert_eq!(e.code, ErrorCode::InsufficientPeers, "two of three old members cannot deal a 3-of-3 key");
    }

    #[test]
    fn only_failures_that_name_someone_are_replaced() {
        let blamed = |code| RequestError::new(code, "x").blaming(nodes(&[2]));
        for code in [ErrorCode::PeerUnavailable, ErrorCode::PeerUnattested, ErrorCode::Timeout, ErrorCode::ProtocolAbort] {
            assert!(replaceable(&blamed(code)), "{code}");
            assert!(!replaceable(&RequestError::new(code, "nobody named")), "{code}");
        }
        for code in [ErrorCode::VersionMismatch, ErrorCode::Storage, ErrorCode::Unauthorized, ErrorCode::InvalidSigners] {
            assert!(!replaceable(&blamed(code)), "{code}");
        }
    }

    #[test]
    fn the_next_quorum_leaves_out_the_blamed_and_keeps_committee_order() {
        let q = signing(&[1, 2, 3, 4], 2);
        let excluded = excluded_after(&[], &nodes(&[1]));
        assert_eq!(next_signers(&q, &excluded, &nodes(&[1]), &set(&[1, 2, 3, 4])), Some(nodes(&[2, 3])));
        // Not ready, not chosen.
        assert_eq!(next_signers(&q, &excluded, &nodes(&[1]), &set(&[1, 2, 4])), Some(nodes(&[2, 4])));
    }

    #[test]
    fn an_earlier_blame_is_forgiven_when_no_fresh_member_is_left_but_never_the_latest() {
        let q = signing(&[1, 2, 3], 2);
        // Attempt 1 blamed node-1, attempt 2 blamed node-3; node-2 is left,
        // and node-1 (blamed earlier, still heartbeating) makes the pair.
        let excluded = excluded_after(&excluded_after(&[], &nodes(&[1])), &nodes(&[3]));
        assert_eq!(excluded, nodes(&[1, 3]));
        assert_eq!(next_signers(&q, &excluded, &nodes(&[3]), &set(&[1, 2, 3])), Some(nodes(&[1, 2])));
        // Node-1 not heartbeating: no quorum.
        assert_eq!(next_signers(&q, &excluded, &nodes(&[3]), &set(&[2, 3])), None);
    }

    #[test]
    fn no_next_quorum_when_the_request_may_not_fail_over() {
        let named = Quorum { may_fail_over: false, ..signing(&[1, 2, 3], 2) };
        assert_eq!(next_signers(&named, &nodes(&[1]), &nodes(&[1]), &set(&[1, 2, 3])), None);
        let keygen = Quorum::everyone(&nodes(&[1, 2, 3]));
        assert_eq!((keygen.threshold, keygen.may_fail_over), (3, false));
        assert_eq!(next_signers(&keygen, &[], &[], &set(&[1, 2, 3])), None);
    }

    #[test]
    fn a_participant_is_gone_only_when_missing_at_two_checks_in_a_row() {
        let participants = nodes(&[1, 2, 3]);
        let (missing, gone_now) = gone(&participants, &set(&[1, 3]), &[]);
        assert_eq!((missing.clone(), gone_now), (nodes(&[2]), vec![]));
        let (_, gone_now) = gone(&participants, &set(&[1, 3]), &missing);
        assert_eq!(gone_now, nodes(&[2]));
        // Back in between: the count starts again.
        let (missing, _) = gone(&participants, &set(&[1, 2, 3]), &missing);
        let (_, gone_now) = gone(&participants, &set(&[1, 3]), &missing);
        assert!(gone_now.is_empty());
    }

    #[test]
    fn pools_are_kept_for_every_set_the_rotation_chooses() {
        let committee = nodes(&[1, 2, 3, 4]);
        let ready = set(&[1, 2, 4]);
        let sets = rotation_sets(&committee, 2, &ready);
        assert_eq!(sets, vec![nodes(&[1, 2]), nodes(&[1, 4]), nodes(&[2, 4])]);
        for i in 0..200 {
            let chosen = first_signers(&committee, 2, None, &ready, &request(i)).unwrap();
            assert!(sets.contains(&chosen), "{chosen:?}");
        }
        assert!(rotation_sets(&committee, 4, &ready).is_empty(), "no set without enough ready members");
    }
}
