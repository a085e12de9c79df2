//! Pooling velocity counts before a sign request under a velocity limit:
//! one broadcast in which each signer of the session sends the recent
//! signatures it counted for the wallet's rule; every signer takes the
//! union. A signature's signers are a quorum, and with more than half the
//! committee signing (2t > n) any two quorums share a member, so the union
//! holds every earlier signature whichever quorum made it. (With 2t <= n
//! a signature no member of this quorum took part in is missed until one
//! of its signers shares a later tally; SECURITY.md says so.)
//!
//! Every broadcast on the channel is signed by its sender's identity key,
//! so a host can drop a tally (the session times out) but not change one.

use crate::policy::ledger::{self, Entry};
use round_based::{Mpc, ProtocolMessage};
use serde::{Deserialize, Serialize};

/// The step's one message.
#[derive(Clone, Debug, ProtocolMessage, Serialize, Deserialize)]
pub enum Msg {
    /// What the sender counted.
    Counted(Counted),
}

/// One signer's recent entries for the rule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counted {
    entries: Vec<Entry>,
}

/// Why the tally failed.
#[derive(Debug, thiserror::Error)]
pub enum TallyError {
    /// A party sent more entries than any ledger holds (session index).
    #[error("party {party} sent {len} entries, more than a ledger holds")]
    TooMany {
        /// Its session index.
        party: u16,
        /// How many.
        len: usize,
    },
    /// The transport failed.
    #[error("{0}")]
    Transport(String),
}

/// Runs party `i` of `n`: sends `mine`, returns every party's entries
/// (its own included), deduplicated by request.
pub async fn run<M>(party: M, i: u16, n: u16, mine: Vec<Entry>) -> Result<Vec<Entry>, TallyError>
where
    M: Mpc<ProtocolMessage = Msg>,
{
    let theirs = crate::broadcast::exchange(party, i, n, Counted { entries: mine.clone() }).await.map_err(|e| TallyError::Transport(e.to_string()))?;
    let mut all = mine;
    for (party, _, counted) in theirs.into_iter_indexed() {
        if counted.entries.len() > ledger::MAX_ENTRIES {
            return Err(TallyError::TooMany { party, len: counted.entries.len() });
        }
        for e in counted.entries {
            if !all.iter().any(|a| a.request == e.request) {
                all.push(e);
            }
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;
    use round_based::sim::run as simulate;

    fn entry(n: u8) -> Entry {
        Entry { request: [n; 32], rule: "hot".into(), at_ms: u64::from(n), amount: None, run: [n; 16] }
    }

    #[test]
    fn every_party_ends_with_the_union_of_what_each_counted() {
        let counted = [vec![entry(1), entry(2)], vec![entry(2), entry(3)], vec![]];
        let all = simulate::<Msg, _>(3, |i, party| {
            let mine = counted[usize::from(i)].clone();
            async move { run(party, i, 3, mine).await }
        })
        .unwrap()
        .into_vec();
        for union in all {
            let mut requests: Vec<u8> = union.unwrap().iter().map(|e| e.request[0]).collect();
            requests.sort();
            assert_eq!(requests, [1, 2, 3]);
        }
    }
}
