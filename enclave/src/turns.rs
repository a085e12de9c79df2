//! Turns at this signer's CPU for heavy sessions (ECDSA's Paillier rounds).
//!
//! A signer that runs every session at once shares its cores among all of
//! them: past a few dozen ECDSA sessions every one slows until none meets
//! its deadline. So heavy sessions take turns: at most `limit` run at once,
//! the others wait, earliest deadline first.
//!
//! A plain bound could deadlock across signers: node A runs X and waits for
//! B, B runs Y and waits for A, each holding the other's session back. Every
//! signer orders sessions by the same key (the deadline the plan states,
//! then the session id), and a session that comes before every running one
//! runs at once, past the limit. So at every signer every waiting session
//! comes after every running one, and the first session of the whole
//! cluster runs at each of its parties: some session always progresses.
//! Going past the limit takes a newcomer with an earlier deadline than all
//! that run, which sessions arriving in deadline order seldom have.

use conclave_proto::SessionId;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Where a session stands in line: earlier deadlines first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    /// The session's deadline as its plan states it (Unix ms): the same
    /// number at every party, so every signer orders sessions alike.
    pub deadline_ms: u64,
    /// Between equal deadlines.
    pub session: SessionId,
}

/// The line of heavy sessions at this signer.
pub struct Turns {
    limit: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    running: BTreeSet<Place>,
    waiting: BTreeMap<Place, oneshot::Sender<Turn>>,
}

/// A running session's turn; the next in line runs when it is dropped.
pub struct Turn {
    turns: Arc<Turns>,
    place: Place,
    waited: Option<std::time::Duration>,
}

impl Turn {
    /// How long the session waited for it (none: it ran at once).
    pub fn waited(&self) -> Option<std::time::Duration> {
        self.waited
    }
}

/// How many run and wait (what the tests check).
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Load {
    /// Heavy sessions running.
    pub running: usize,
    /// Heavy sessions waiting for their turn.
    pub waiting: usize,
}

impl Turns {
    /// At most `limit` heavy sessions at once (at least one).
    pub fn new(limit: usize) -> Arc<Turns> {
        Arc::new(Turns { limit: limit.max(1), state: Mutex::default() })
    }

    /// Waits for the turn of the session at `place`. Dropping the future
    /// leaves the line.
    pub async fn take(self: &Arc<Self>, place: Place) -> Turn {
        let rx = {
            let mut state = self.state.lock().expect("turns lock");
            let first = state.running.last().is_some_and(|last| place < *last);
            if state.running.len() < self.limit || first {
                state.running.insert(place);
                return Turn { turns: self.clone(), place, waited: None };
            }
            let (tx, rx) = oneshot::channel();
            state.waiting.insert(place, tx);
            rx
        };
        let since = std::time::Instant::now();
        let mut leave = Leave { turns: self, place, waiting: true };
        let mut turn = rx.await.expect("a waiting session's sender is only dropped with its turn");
        leave.waiting = false;
        turn.waited = Some(since.elapsed());
        turn
    }

    /// How many run and wait now.
    #[cfg(test)]
    pub fn load(&self) -> Load {
        let state = self.state.lock().expect("turns lock");
        Load { running: state.running.len(), waiting: state.waiting.len() }
    }

    /// Ends the turn at `place` and hands free turns to the first in line.
    fn end(self: &Arc<Self>, place: Place) {
        let mut unclaimed = Vec::new();
        {
            let mut state = self.state.lock().expect("turns lock");
            state.running.remove(&place);
            while state.running.len() < self.limit {
                let Some((next, tx)) = state.waiting.pop_first() else { break };
                state.running.insert(next);
                // A waiter that left after it was handed its turn drops it
                // below, outside the lock, which ends it in turn.
                if let Err(turn) = tx.send(Turn { turns: self.clone(), place: next, waited: None }) {
                    unclaimed.push(turn);
                }
            }
        }
        drop(unclaimed);
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.turns.end(self.place);
    }
}

/// Takes a waiting session out of the line when its wait is abandoned.
struct Leave<'a> {
    turns: &'a Arc<Turns>,
    place: Place,
    waiting: bool,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        // If the turn was handed over already, the dropped receiver holds
        // it and ends it; else the place is still in `waiting`.
        if self.waiting {
            self.turns.state.lock().expect("turns lock").waiting.remove(&self.place);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_proto::ids::SessionKind;
    use conclave_proto::RequestId;
    use futures::FutureExt;

    fn place(deadline_ms: u64, request: &str) -> Place {
        Place { deadline_ms, session: SessionId::derive(SessionKind::Sign, &RequestId::new(request).unwrap(), 1) }
    }

    #[tokio::test]
    async fn past_the_limit_sessions_wait_and_run_earliest_deadline_first() {
        let turns = Turns::new(2);
        let a = turns.take(place(10, "a")).await;
        let _b = turns.take(place(20, "b")).await;
        let mut late = Box::pin(turns.take(place(40, "late")));
        let mut early = Box::pin(turns.take(place(30, "early")));
        assert!((&mut late).now_or_never().is_none());
        assert!((&mut early).now_or_never().is_none());
        assert_eq!(turns.load(), Load { running: 2, waiting: 2 });
        drop(a);
        let early = (&mut early).now_or_never().expect("the earlier deadline runs first");
        assert!(early.waited().is_some() && _b.waited().is_none(), "a turn says whether its session waited");
        assert!((&mut late).now_or_never().is_none(), "one turn was free, and it went to the earlier deadline");
        assert_eq!(turns.load(), Load { running: 2, waiting: 1 });
    }

    #[tokio::test]
    async fn a_session_before_every_running_one_runs_at_once_so_no_signer_waits_on_another_forever() {
        let turns = Turns::new(1);
        let _x = turns.take(place(50, "x")).await;
        // Y comes before X in every signer's order: where X runs and Y
        // arrives, Y must run too, or X's peer (running Y, waiting for this
        // signer) and this signer (running X, waiting for it) wait forever.
        let y = turns.take(place(40, "y")).now_or_never().expect("the first session in line runs at once");
        assert_eq!(turns.load(), Load { running: 2, waiting: 0 });
        let mut z = Box::pin(turns.take(place(60, "z")));
        assert!((&mut z).now_or_never().is_none(), "a later session waits");
        drop(y);
        assert!((&mut z).now_or_never().is_none(), "over the limit: Y's end frees no turn while X runs");
    }

    #[tokio::test]
    async fn a_session_that_stops_waiting_leaves_the_line_and_takes_no_turn() {
        let turns = Turns::new(1);
        let a = turns.take(place(10, "a")).await;
        let abandoned = turns.take(place(20, "gone"));
        assert!(Box::pin(abandoned).now_or_never().is_none());
        assert_eq!(turns.load(), Load { running: 1, waiting: 0 }, "dropping the wait left the line");
        let mut next = Box::pin(turns.take(place(30, "next")));
        assert!((&mut next).now_or_never().is_none());
        drop(a);
        let next = (&mut next).now_or_never().expect("the turn goes to the one still waiting");
        drop(next);
        assert_eq!(turns.load(), Load { running: 0, waiting: 0 });
    }

    #[tokio::test]
    async fn a_turn_handed_to_a_waiter_that_left_is_passed_on() {
        let turns = Turns::new(1);
        let a = turns.take(place(10, "a")).await;
        let mut leaving = Box::pin(turns.take(place(20, "leaving")));
        let mut after = Box::pin(turns.take(place(30, "after")));
        assert!((&mut leaving).now_or_never().is_none());
        assert!((&mut after).now_or_never().is_none());
        // The turn is handed to `leaving`, which is dropped before it reads it.
        drop(a);
        drop(leaving);
        assert!((&mut after).now_or_never().is_some(), "the unclaimed turn ended and the next in line runs");
    }
}
