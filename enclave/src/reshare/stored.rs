//! A reshare's last step: every new member says, in a broadcast signed by
//! its identity key (as every broadcast on the channel), that it stored its
//! share of the new version; every party waits for all of them. Only then
//! does a member commit to the new version (its floor rises, so the old
//! share never opens again) and a member that leaves retire its old share.
//! A reshare cut before that leaves the old version in force on every node
//! (no floor raised, no share retired), so the old version signs, and a
//! retry replaces the new shares nobody committed to. A reshare cut after
//! it has every new share stored: the new version signs.
//!
//! Which party is a new member comes from the caller (the signed request),
//! never from the messages; a sender is known by the index the channel
//! authenticated.

use round_based::{Mpc, ProtocolMessage};
use serde::{Deserialize, Serialize};

/// The step's one message.
#[derive(Clone, Debug, ProtocolMessage, Serialize, Deserialize)]
pub enum Msg {
    /// Every party sends one (a party that joins nothing says so), so that
    /// the round waits for everyone and a silent party is a timeout.
    Stored(Stored),
}

/// What a party stored: the new version, if it is a new member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stored {
    version: Option<u64>,
}

/// Why the new version is not acknowledged by every new member.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    /// A new member did not say it stored `version` (session index).
    #[error("party {party} did not acknowledge storing the new version")]
    NotStored {
        /// Its session index.
        party: u16,
    },
    /// A party that joins nothing claims to have stored a share.
    #[error("party {party} acknowledged a share it was not dealt")]
    OutOfRole {
        /// Its session index.
        party: u16,
    },
    /// The transport failed.
    #[error("{0}")]
    Transport(String),
}

/// Runs party `i`'s side: `joining[p]` says whether party `p` is a new
/// member; `stored` is whether this party stored `version` (a new member
/// only calls this after it did).
pub async fn run<M>(party: M, i: u16, joining: &[bool], version: u64) -> Result<(), AckError>
where
    M: Mpc<ProtocolMessage = Msg>,
{
    let n = joining.len() as u16;
    let mine = Stored { version: joining[usize::from(i)].then_some(version) };
    let acks = crate::broadcast::exchange(party, i, n, mine).await.map_err(|e| AckError::Transport(e.to_string()))?;
    for (party, _, ack) in acks.into_iter_indexed() {
        match (joining[usize::from(party)], ack.version) {
            (true, Some(v)) if v == version => {}
            (true, _) => return Err(AckError::NotStored { party }),
            (false, None) => {}
            (false, Some(_)) => return Err(AckError::OutOfRole { party }),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use round_based::sim::run as simulate;

    const JOINING: [bool; 3] = [true, false, true];

    #[test]
    fn the_step_completes_when_every_new_member_acknowledges() {
        let all = simulate::<Msg, _>(3, |i, party| async move { run(party, i, &JOINING, 2).await }).unwrap().into_vec();
        assert!(all.iter().all(|r| r.is_ok()), "{all:?}");
    }

    #[test]
    fn a_new_member_that_did_not_store_or_stored_another_version_is_named() {
        // Party 2 acts as if it had stored nothing (it says so).
        let all = simulate::<Msg, _>(3, |i, party| async move {
            let view = if i == 2 { [true, false, false] } else { JOINING };
            run(party, i, &view, 2).await
        })
        .unwrap()
        .into_vec();
        assert!(matches!(all[0], Err(AckError::NotStored { party: 2 })), "{:?}", all[0]);
        assert!(matches!(all[1], Err(AckError::NotStored { party: 2 })), "{:?}", all[1]);
        // Party 0 stored another version.
        let all = simulate::<Msg, _>(3, |i, party| async move { run(party, i, &JOINING, if i == 0 { 3 } else { 2 }).await }).unwrap().into_vec();
        assert!(matches!(all[1], Err(AckError::NotStored { party: 0 })), "{:?}", all[1]);
        // Party 1, which joins nothing, claims a share.
        let all = simulate::<Msg, _>(3, |i, party| async move {
            let view = if i == 1 { [true, true, true] } else { JOINING };
            run(party, i, &view, 2).await
        })
        .unwrap()
        .into_vec();
        assert!(matches!(all[0], Err(AckError::OutOfRole { party: 1 })), "{:?}", all[0]);
    }
}
