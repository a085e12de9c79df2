//! Turns at this signer's CPU for heavy sessions (ECDSA's Paillier rounds).
//!
//! A signer that runs every session at once shares its cores among all of
//! them: past a few dozen ECDSA sessions every one slows until none meets
//! its deadline. So heavy sessions take turns: at most `limit` run at once,
//! the others wait, first planned first.
//!
//! A plain bound could deadlock across signers: node A runs X and waits for
//! B, B runs Y and waits for A, each holding the other's session back. Every
//! signer orders sessions by the same key (when the plan says its request
//! was first planned, then the session id), and a session that comes before
//! any running one runs at once, past the limit. So at every signer every
//! waiting session comes after every running one, and the first session of
//! the whole cluster runs at each of its parties: some session always
//! progresses. Going past the limit takes a newcomer planned before one
//! that runs, which sessions arriving in the order they were planned seldom
//! are (a few milliseconds of skew between hosts' clocks and links).
//!
//! Not earliest deadline first: the key is the same at every signer either
//! way, but a running session with a far deadline (aux info's ten minutes,
//! a presignature's minute, a patient client's) would let every newcomer
//! with a nearer one run at once past the limit, and the limit would hold
//! nothing back.
//!
//! A session that would have to wait longer than its deadline allows is
//! refused before it queues ([`Turns::admit`]): judged by the sessions
//! ahead of it and how long a turn has lasted here lately, so that its
//! client hears `overloaded` at once instead of `timeout` at the deadline,
//! and the sessions behind it do not wait for work that would be wasted.

use conclave_proto::SessionId;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::oneshot;

/// Where a session stands in line: first planned first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Place {
    /// When its plan says its request was first planned (Unix ms): the
    /// same number at every party, so every signer orders sessions alike.
    pub planned_ms: u64,
    /// Between sessions planned in the same millisecond.
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
    /// How long a turn lasts here (ms), a moving average of the last few;
    /// `None` until one ended.
    turn_ms: Option<f64>,
}

impl State {
    /// Whether a session at `place` runs without waiting: a turn is free,
    /// or it comes before a running session (so no running session comes
    /// after a waiting one).
    fn runs_at_once(&self, place: &Place, limit: usize) -> bool {
        self.running.len() < limit || self.running.last().is_some_and(|last| place < last)
    }
}

/// A running session's turn; the next in line runs when it is dropped.
pub struct Turn {
    turns: Arc<Turns>,
    place: Place,
    since: Instant,
    waited: Option<std::time::Duration>,
}

/// Why a heavy session was refused a place in line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overloaded {
    /// When it would likely have ended (Unix ms), past its deadline.
    pub expected_end_ms: u64,
}

/// Weight of the latest turn in [`State::turn_ms`].
const TURN_WEIGHT: f64 = 0.2;

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

    /// Whether the session at `place` may queue at `now_ms` (Unix ms): a
    /// session that runs at once may, and so may any until a turn has
    /// ended here; else its wait is estimated as the turns of the sessions
    /// ahead of it, shared among the `limit` running at once, plus half a
    /// turn for a running one to end, and it is refused if that and a turn
    /// of its own end past its deadline (`deadline_ms`, Unix ms).
    pub fn admit(&self, place: &Place, deadline_ms: u64, now_ms: u64) -> Result<(), Overloaded> {
        let state = self.state.lock().expect("turns lock");
        let (false, Some(turn_ms)) = (state.runs_at_once(place, self.limit), state.turn_ms) else { return Ok(()) };
        let ahead = state.waiting.range(..place).count() as f64;
        let expected_end_ms = now_ms + ((ahead / self.limit as f64 + 0.5) * turn_ms + turn_ms) as u64;
        if expected_end_ms > deadline_ms {
            return Err(Overloaded { expected_end_ms });
        }
        Ok(())
    }

    /// Waits for the turn of the session at `place`. Dropping the future
    /// leaves the line.
    pub async fn take(self: &Arc<Self>, place: Place) -> Turn {
        let rx = {
            let mut state = self.state.lock().expect("turns lock");
            if state.runs_at_once(&place, self.limit) {
                state.running.insert(place);
                return Turn { turns: self.clone(), place, since: Instant::now(), waited: None };
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

    /// Ends the turn at `place`, which lasted `lasted`, and hands free
    /// turns to the first in line.
    fn end(self: &Arc<Self>, place: Place, lasted: std::time::Duration) {
        let mut unclaimed = Vec::new();
        {
            let mut state = self.state.lock().expect("turns lock");
            state.running.remove(&place);
            let ms = lasted.as_secs_f64() * 1000.0;
            state.turn_ms = Some(state.turn_ms.map_or(ms, |mean| mean + TURN_WEIGHT * (ms - mean)));
            while state.running.len() < self.limit {
                let Some((next, tx)) = state.waiting.pop_first() else { break };
                state.running.insert(next);
                // A waiter that left after it was handed its turn drops it
                // below, outside the lock, which ends it in turn.
                if let Err(turn) = tx.send(Turn { turns: self.clone(), place: next, since: Instant::now(), waited: None }) {
                    unclaimed.push(turn);
                }
            }
        }
        drop(unclaimed);
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.turns.end(self.place, self.since.elapsed());
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

    fn place(planned_ms: u64, request: &str) -> Place {
        Place { planned_ms, session: SessionId::derive(SessionKind::Sign, &RequestId::new(request).unwrap(), 1) }
    }

    #[tokio::test]
    async fn past_the_limit_sessions_wait_and_run_first_planned_first() {
        let turns = Turns::new(2);
        let a = turns.take(place(10, "a")).await;
        let _b = turns.take(place(20, "b")).await;
        let mut late = Box::pin(turns.take(place(40, "late")));
        let mut early = Box::pin(turns.take(place(30, "early")));
        assert!((&mut late).now_or_never().is_none());
        assert!((&mut early).now_or_never().is_none());
        assert_eq!(turns.load(), Load { running: 2, waiting: 2 });
        drop(a);
        let early = (&mut early).now_or_never().expect("the one planned first runs first");
        assert!(early.waited().is_some() && _b.waited().is_none(), "a turn says whether its session waited");
        assert!((&mut late).now_or_never().is_none(), "one turn was free, and it went to the one planned first");
        assert_eq!(turns.load(), Load { running: 2, waiting: 1 });
    }

    #[tokio::test]
    async fn a_session_before_a_running_one_runs_at_once_so_no_signer_waits_on_another_forever() {
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
    async fn a_session_that_would_wait_past_its_deadline_is_refused_before_it_queues() {
        let turns = Turns::new(2);
        let now = 1_000_000;
        let at = |order: u64, request: &str| place(now + order, request);
        let (a, b) = (turns.take(at(0, "a")).await, turns.take(at(1, "b")).await);
        // No turn has ended yet: nothing to judge by, so a short deadline
        // queues too.
        assert_eq!(turns.admit(&at(10, "blind"), now + 1, now), Ok(()));
        drop(turns.take(place(now - 1, "ended")).await);
        assert!(turns.state.lock().unwrap().turn_ms.is_some(), "an ended turn is counted");
        turns.state.lock().unwrap().turn_ms = Some(1_000.0);
        // Both turns are taken and nobody waits: half a turn for one to end,
        // then its own.
        assert_eq!(turns.admit(&at(10, "short"), now + 1_499, now), Err(Overloaded { expected_end_ms: now + 1_500 }));
        assert_eq!(turns.admit(&at(10, "enough"), now + 1_500, now), Ok(()));
        // Four queued ahead, two at a time: two more turns of waiting,
        // however far their own deadlines.
        let mut ahead: Vec<_> = ["c", "d", "e", "f"].iter().zip(5..).map(|(r, order)| Box::pin(turns.take(at(order, r)))).collect();
        for wait in &mut ahead {
            assert!(wait.now_or_never().is_none());
        }
        assert_eq!(turns.admit(&at(10, "behind"), now + 3_499, now), Err(Overloaded { expected_end_ms: now + 3_500 }));
        assert_eq!(turns.admit(&at(10, "in-time"), now + 3_500, now), Ok(()));
        // One planned before those waiting goes ahead of them: less to wait for.
        assert_eq!(turns.admit(&at(4, "ahead"), now + 1_500, now), Ok(()));
        // One planned before a running session runs at once, so it is never
        // refused.
        assert_eq!(turns.admit(&place(now - 5, "first"), now + 1, now), Ok(()));
        drop((a, b));
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
