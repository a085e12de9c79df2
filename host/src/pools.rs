//! Presignature pools (ECDSA presignatures, EdDSA FROST nonces), the
//! hosts' part: the keeper of each signer set (the host of its first
//! member) asks the set's signers for more while this node is idle, and
//! hands them out to the sign requests it plans, from its own counts. The
//! signers trust none of it: a wrong count costs a fallback to the full
//! protocol, never a presignature used twice (each signer takes a
//! presignature once, under its own floor).

use crate::coordinator::Host;
use crate::quorum;
use crate::registry::Bucket;
use conclave_proto::link::{PresignPlan, PresignWindow, ToEnclave};
use conclave_proto::presign::PoolSizes;
use conclave_proto::registry::PoolRecord;
use conclave_proto::request::{RequestBody, SignPayload};
use conclave_proto::statement::Endorsed;
use conclave_proto::subjects::presign_subject;
use conclave_proto::{NodeId, PoolId, RequestError, RequestId, Scheme};
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// A presignature plan is a few hundred bytes.
const MAX_PLAN_BYTES: usize = 4096;
/// How long one presignature may take (three protocol rounds, a store and
/// an acknowledgement; seconds of CPU on a busy machine).
const PRESIGN_DEADLINE: Duration = Duration::from_secs(60);
/// Compare-and-set tries of one copy of a pool's counts.
const SAVE_TRIES: usize = 3;

/// The pool a sign request may take from, if any: a wallet with pools, the
/// root key or a path declared for it (ECDSA), for a message the signers
/// hash themselves (never a digest); EdDSA for any payload (FROST binds its
/// nonces to the message when it signs).
pub(crate) fn eligible(sizes: &PoolSizes, body: &RequestBody, signers: &[NodeId]) -> Option<PoolId> {
    match body {
        RequestBody::Sign(s) if sizes.serves(&s.wallet, &s.path) && (s.scheme == Scheme::Eddsa || !matches!(s.payload, SignPayload::Digest(_))) => {
            Some(PoolId::of(&s.wallet, s.scheme, s.version, signers, &s.path))
        }
        _ => None,
    }
}

/// What this node's signer answered to a presignature plan.
pub(crate) struct Made {
    /// Why it was not made.
    pub error: Option<RequestError>,
    /// The signer's window for the pool, when the plan's number lay
    /// outside it.
    pub window: Option<PresignWindow>,
}

/// The emptiest pool below its target: level, pool, wallet, scheme, key
/// version, signer set, path, counters.
type Refill = (u32, PoolId, conclave_proto::WalletId, Scheme, u32, Vec<NodeId>, Vec<u32>, PoolRecord);

fn encode(record: &PoolRecord) -> bytes::Bytes {
    serde_json::to_vec(record).expect("pool records serialise").into()
}

/// The counts of the pools this host keeps. A set's keeper (the host of
/// its first member) is the only host that makes or hands out its
/// presignatures, so its memory leads and the registry holds a copy for
/// its next start, written in the background: a copy that lags after a
/// crash costs fallbacks to the full protocol, never a presignature used
/// twice (the signers' floors refuse it).
#[derive(Default)]
pub(crate) struct Ledger {
    books: Mutex<Books>,
    changed: Notify,
}

#[derive(Default)]
struct Books {
    counts: HashMap<PoolId, PoolRecord>,
    unsaved: HashSet<PoolId>,
}

impl Ledger {
    /// Changes the counts of a pool this ledger holds; nothing for one it
    /// has not loaded.
    fn update<T>(&self, pool: PoolId, change: impl FnOnce(&mut PoolRecord) -> T) -> Option<T> {
        let mut books = self.books.lock().expect("ledger lock");
        let record = books.counts.get_mut(&pool)?;
        let before = *record;
        let out = change(record);
        if *record != before {
            books.unsaved.insert(pool);
            self.changed.notify_one();
        }
        Some(out)
    }

    /// The next unused presignature of `pool`, now handed out.
    fn take(&self, pool: PoolId) -> Option<u32> {
        self.update(pool, |record| {
            (record.used < record.made).then(|| {
                record.used += 1;
                record.used
            })
        })
        .flatten()
    }

    /// Presignature `seq` went to no request: handed out again, unless a
    /// later one went since (whose take a signer's floor raised past it).
    fn give_back(&self, pool: PoolId, seq: u32) {
        self.update(pool, |record| {
            if record.used == seq {
                record.used -= 1;
            }
        });
    }

    /// Every signer of `pool`'s set stored presignature `seq`.
    fn made(&self, pool: PoolId, seq: u32) {
        self.update(pool, |record| record.made = record.made.max(seq));
    }

    /// This node's signer refused number `seq` of `pool` as outside its
    /// `window`. Counts behind the floor (a registry restored from a
    /// backup) or made past the window's end (a nitro signer's floors
    /// start again from 1) would ask for numbers refused for ever: they
    /// move to the floor, up or down (nothing below it serves, nothing
    /// above it is known to be made; a number made again replaces what a
    /// signer holds of it). A full pool whose next number is the window's
    /// end (a signer configured with a smaller pool than its host) stays:
    /// moving it would make the same presignatures again and again. The
    /// registry's copy keeps its higher counts (a copy never lowers one),
    /// so a keeper that starts on counts ahead moves again, after one
    /// refused refill.
    fn realign(&self, pool: PoolId, seq: u32, window: PresignWindow) {
        let spent = window.floor.saturating_sub(1);
        self.update(pool, |record| {
            if seq < window.floor || record.made >= window.end {
                *record = PoolRecord { made: spent, used: spent };
            }
        });
    }

    /// The counts changed since the last call.
    fn unsaved(&self) -> Vec<(PoolId, PoolRecord)> {
        let mut books = self.books.lock().expect("ledger lock");
        let pools: Vec<PoolId> = books.unsaved.drain().collect();
        pools.into_iter().map(|pool| (pool, books.counts[&pool])).collect()
    }
}

impl Host {
    /// The counts of `pool` (zero for a pool never filled): this host's,
    /// or the registry's copy when this host has not seen the pool since
    /// it started.
    async fn pool_counts(&self, pool: PoolId) -> Option<PoolRecord> {
        if let Some(record) = self.pools.books.lock().expect("ledger lock").counts.get(&pool) {
            return Some(*record);
        }
        let stored = match self.registry.get(Bucket::Pools, &pool.to_string()).await {
            Ok(Some(entry)) => serde_json::from_slice(&entry.value).ok()?,
            Ok(None) => PoolRecord::default(),
            Err(_) => return None,
        };
        Some(*self.pools.books.lock().expect("ledger lock").counts.entry(pool).or_insert(stored))
    }

    /// Hands out the next presignature of `pool`, a pool this host keeps
    /// (its number), or none if it is empty.
    pub(crate) async fn take_presignature(&self, pool: PoolId) -> Option<u32> {
        self.pool_counts(pool).await?;
        self.pools.take(pool)
    }

    /// Presignature `seq` of `pool` went to no request (another host's
    /// record won).
    pub(crate) fn give_back_presignature(&self, pool: PoolId, seq: u32) {
        self.pools.give_back(pool, seq);
    }

    /// A tick each heartbeat period for the pools' background tasks, none
    /// when this host keeps no pools.
    fn pools_tick(&self) -> Option<tokio::time::Interval> {
        self.config.presign_pools.any().then(|| {
            let mut tick = tokio::time::interval(self.config.heartbeat);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick
        })
    }

    /// Copies the pools' counts to the registry as they change (and again
    /// each heartbeat period while a copy fails). A copy never lowers a
    /// count: a number handed out once stays handed out.
    pub async fn save_pools(self: Arc<Self>) {
        let Some(mut tick) = self.pools_tick() else { return };
        loop {
            tokio::select! {
                _ = self.pools.changed.notified() => {}
                _ = tick.tick() => {}
            }
            for (pool, record) in self.pools.unsaved() {
                if !self.save_pool(pool, record).await {
                    self.pools.books.lock().expect("ledger lock").unsaved.insert(pool);
                }
            }
        }
    }

    async fn save_pool(&self, pool: PoolId, record: PoolRecord) -> bool {
        let key = pool.to_string();
        for _ in 0..SAVE_TRIES {
            let written = match self.registry.get(Bucket::Pools, &key).await {
                Ok(Some(entry)) => {
                    let Ok(stored) = serde_json::from_slice::<PoolRecord>(&entry.value) else { return false };
                    let merged = PoolRecord { made: stored.made.max(record.made), used: stored.used.max(record.used) };
                    if merged == stored {
                        return true;
                    }
                    self.registry.update(Bucket::Pools, &key, encode(&merged), entry.revision).await
                }
                Ok(None) => self.registry.create(Bucket::Pools, &key, encode(&record)).await.map(drop),
                Err(_) => return false,
            };
            if written.is_ok() {
                return true;
            }
        }
        false
    }

    /// Subscribes to the presignature plans addressed to this node.
    pub async fn subscribe_presign_plans(&self) -> Result<async_nats::Subscriber, async_nats::SubscribeError> {
        self.nats.client.subscribe(presign_subject(self.me())).await
    }

    /// Hands presignature plans to the signer, which checks each.
    pub async fn carry_presign_plans(self: Arc<Self>, mut plans: async_nats::Subscriber) {
        while let Some(msg) = plans.next().await {
            let plan = (msg.payload.len() <= MAX_PLAN_BYTES).then(|| serde_json::from_slice::<PresignPlan>(&msg.payload).ok()).flatten();
            match plan {
                Some(plan) => {
                    self.link.send(ToEnclave::Presign { plan });
                }
                None => self.metrics.inc("conclave_rejected_total", conclave_proto::ErrorCode::Malformed.as_str()),
            }
        }
    }

    /// This node's signer finished a presignature.
    pub(crate) fn presigned(&self, request: &RequestId, made: Made) {
        let waiter = self.presigning.lock().expect("presigning lock").remove(request);
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(made);
            }
            // A set this node is in but does not keep: its keeper counts.
            None => {
                if let Some(e) = made.error {
                    tracing::warn!(request = %request, code = %e.code, reason = %e.reason, "presignature not made");
                }
            }
        }
    }

    /// Keeps the pools of the sets this node heads filled, one
    /// presignature at a time, whenever this node runs no attempt and
    /// follows no request.
    pub async fn keep_pools(self: Arc<Self>) {
        let Some(mut tick) = self.pools_tick() else { return };
        loop {
            tick.tick().await;
            // While idle, one after the other; else at the next tick.
            while self.idle() && self.refill_one().await {}
        }
    }

    fn idle(&self) -> bool {
        self.link.is_up() && self.metrics.sessions_active.load(Ordering::Relaxed) == 0 && self.following.lock().expect("following lock").is_empty()
    }

    /// Makes one presignature for the emptiest pool this node heads, if
    /// any is below its target; whether it made one.
    async fn refill_one(&self) -> bool {
        let Ok(ready) = self.view.ready() else { return false };
        let Ok(wallets) = self.registry.list(Bucket::Wallets).await else { return false };
        let mut lowest: Option<Refill> = None;
        for (_, value) in wallets {
            let Some(wallet) = serde_json::from_slice::<Endorsed>(&value).ok().and_then(|e| e.unverified_record()) else { continue };
            if !wallet.committee.contains(self.me()) {
                continue;
            }
            // The root key's pools, and (ECDSA) those of each declared path.
            let mut paths = vec![Vec::new()];
            if wallet.scheme == Scheme::Ecdsa {
                paths.extend(self.config.presign_pools.paths_of(&wallet.wallet).iter().cloned());
            }
            for set in quorum::rotation_sets(&wallet.committee, usize::from(wallet.threshold), &ready) {
                if set.first() != Some(self.me()) {
                    continue;
                }
                for path in &paths {
                    let pool = PoolId::of(&wallet.wallet, wallet.scheme, wallet.version, &set, path);
                    let Some(record) = self.pool_counts(pool).await else { return false };
                    let level = record.made.saturating_sub(record.used);
                    let names: Vec<&str> = set.iter().map(NodeId::as_str).collect();
                    let at: String = path.iter().map(|i| format!("/{i}")).collect();
                    self.metrics.set_pool_level(
                        format!(
                            "{}/{}/v{}/{}{}",
                            wallet.wallet,
                            wallet.scheme,
                            wallet.version,
                            names.join("+"),
                            if at.is_empty() { String::new() } else { format!("/m{at}") }
                        ),
                        level,
                    );
                    if level < self.config.presign_pools.of(&wallet.wallet) && lowest.as_ref().is_none_or(|l| level < l.0) {
                        lowest = Some((level, pool, wallet.wallet.clone(), wallet.scheme, wallet.version, set.clone(), path.clone(), record));
                    }
                }
            }
        }
        let Some((_, pool, wallet, scheme, version, signers, path, record)) = lowest else { return false };
        // The next number: a try that failed is made again under the same
        // number (signers replace what they hold of an unused one).
        let seq = record.made.max(record.used) + 1;
        let now = crate::now_ms();
        // Unique per try: this keeper makes one presignature at a time.
        let request_id = RequestId::new(format!("p-{pool}-{seq}-{now}")).expect("a valid id");
        let plan = PresignPlan {
            request_id: request_id.clone(),
            wallet,
            scheme,
            version,
            signers: signers.clone(),
            seq,
            path,
            deadline_ms: now + PRESIGN_DEADLINE.as_millis() as u64,
            planned_ms: now,
            round_timeout_ms: self.config.round_timeout.as_millis() as u64,
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.presigning.lock().expect("presigning lock").insert(request_id.clone(), tx);
        let payload: bytes::Bytes = serde_json::to_vec(&plan).expect("plans serialise").into();
        for signer in &signers {
            if let Err(e) = self.nats.client.publish(presign_subject(signer), payload.clone()).await {
                tracing::warn!(%signer, error = %e, "cannot send a presignature plan");
            }
        }
        let outcome = tokio::time::timeout(PRESIGN_DEADLINE, rx).await;
        self.presigning.lock().expect("presigning lock").remove(&request_id);
        match outcome {
            Ok(Ok(Made { error: None, .. })) => {
                self.pools.made(pool, seq);
                self.metrics.inc("conclave_presignatures_total", "made");
                true
            }
            failed => {
                if let Ok(Ok(Made { window: Some(window), .. })) = failed {
                    tracing::warn!(%pool, seq, floor = window.floor, end = window.end, "number outside the signer's window for the pool");
                    self.pools.realign(pool, seq, window);
                }
                self.metrics.inc("conclave_presignatures_total", "failed");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loaded(made: u32, used: u32) -> (Ledger, PoolId) {
        let ledger = Ledger::default();
        let pool = PoolId::of(&conclave_proto::WalletId::new("w").unwrap(), Scheme::Ecdsa, 1, &[NodeId::new("a").unwrap()], &[]);
        ledger.books.lock().unwrap().counts.insert(pool, PoolRecord { made, used });
        (ledger, pool)
    }

    #[test]
    fn numbers_go_out_once_in_order_up_to_what_was_made() {
        let (ledger, pool) = loaded(2, 0);
        assert_eq!((ledger.take(pool), ledger.take(pool), ledger.take(pool)), (Some(1), Some(2), None));
        ledger.made(pool, 3);
        assert_eq!(ledger.take(pool), Some(3));
        assert_eq!(ledger.unsaved(), vec![(pool, PoolRecord { made: 3, used: 3 })]);
        assert_eq!(ledger.unsaved(), vec![], "saved once");
        let (empty, pool) = loaded(0, 0);
        assert_eq!(empty.take(pool), None);
        assert_eq!(empty.unsaved(), vec![], "nothing changed");
    }

    #[test]
    fn a_number_comes_back_only_while_no_later_one_went() {
        let (ledger, pool) = loaded(3, 0);
        assert_eq!((ledger.take(pool), ledger.take(pool)), (Some(1), Some(2)));
        ledger.give_back(pool, 1);
        assert_eq!(ledger.take(pool), Some(3), "1 is passed over: a signer's floor rose past it with 2");
        ledger.give_back(pool, 3);
        assert_eq!(ledger.take(pool), Some(3), "the last one comes back");
    }

    #[test]
    fn counts_move_to_the_signers_floor_down_or_up_but_a_full_pool_stays() {
        let window = |floor, end| PresignWindow { floor, end };
        let (ledger, pool) = loaded(40, 40);
        ledger.realign(pool, 41, window(6, 10));
        assert_eq!(ledger.take(pool), None, "nothing is known to be made at or above the floor");
        ledger.made(pool, 6);
        assert_eq!(ledger.take(pool), Some(6));
        ledger.realign(pool, 7, window(20, 24));
        ledger.made(pool, 20);
        assert_eq!(ledger.take(pool), Some(20), "up past the numbers a restore forgot");
        assert_eq!(ledger.unsaved(), vec![(pool, PoolRecord { made: 20, used: 20 })]);
        // Made up to the signer's end, the next number refused: kept.
        let (full, pool) = loaded(23, 21);
        full.realign(pool, 24, window(21, 24));
        assert_eq!((full.take(pool), full.take(pool), full.take(pool)), (Some(22), Some(23), None));
    }

    #[test]
    fn a_pool_not_loaded_is_left_alone() {
        let (ledger, _) = loaded(1, 0);
        let other = PoolId::of(&conclave_proto::WalletId::new("v").unwrap(), Scheme::Eddsa, 1, &[NodeId::new("a").unwrap()], &[]);
        assert_eq!(ledger.take(other), None);
        ledger.made(other, 5);
        assert_eq!(ledger.unsaved(), vec![]);
    }
}
