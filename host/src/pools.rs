//! Presignature pools (ECDSA presignatures, EdDSA FROST nonces), the hosts' part: which presignature a sign request
//! takes (each pool's counters in the registry, moved by compare-and-set),
//! and the keeper that asks the signers of each set for more while this
//! node is idle. The signers trust none of it: a wrong count costs a
//! fallback to the full protocol, never a presignature used twice (each
//! signer takes a presignature once, under its own floor).

use crate::coordinator::Host;
use crate::quorum;
use crate::registry::Bucket;
use conclave_proto::link::{PresignPlan, ToEnclave};
use conclave_proto::presign::PoolSizes;
use conclave_proto::registry::PoolRecord;
use conclave_proto::request::{RequestBody, SignPayload};
use conclave_proto::statement::Endorsed;
use conclave_proto::subjects::presign_subject;
use conclave_proto::{NodeId, PoolId, RequestError, RequestId, Scheme};
use futures::StreamExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// A presignature plan is a few hundred bytes.
const MAX_PLAN_BYTES: usize = 4096;
/// How long one presignature may take (three protocol rounds, a store and
/// an acknowledgement; seconds of CPU on a busy machine).
const PRESIGN_DEADLINE: Duration = Duration::from_secs(60);
/// Compare-and-set tries before a request signs without a presignature.
const TAKE_TRIES: usize = 3;

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

/// The emptiest pool below its target: level, pool, wallet, scheme, key
/// version, signer set, path, counters.
type Refill = (u32, PoolId, conclave_proto::WalletId, Scheme, u32, Vec<NodeId>, Vec<u32>, PoolRecord);

fn encode(record: &PoolRecord) -> bytes::Bytes {
    serde_json::to_vec(record).expect("pool records serialise").into()
}

impl Host {
    /// Takes a presignature of `pool` for one request (its number), or none
    /// if the pool is empty or keeps changing under this host.
    pub(crate) async fn take_presignature(&self, pool: PoolId) -> Option<u32> {
        let key = pool.to_string();
        for _ in 0..TAKE_TRIES {
            let entry = self.registry.get(Bucket::Pools, &key).await.ok()??;
            let mut record: PoolRecord = serde_json::from_slice(&entry.value).ok()?;
            if record.used >= record.made {
                return None;
            }
            record.used += 1;
            if self.registry.update(Bucket::Pools, &key, encode(&record), entry.revision).await.is_ok() {
                return Some(record.used);
            }
        }
        None
    }

    /// The pool's counters (zero for a pool never filled).
    async fn pool_record(&self, pool: PoolId) -> Option<(PoolRecord, Option<u64>)> {
        match self.registry.get(Bucket::Pools, &pool.to_string()).await {
            Ok(Some(entry)) => Some((serde_json::from_slice(&entry.value).ok()?, Some(entry.revision))),
            Ok(None) => Some((PoolRecord::default(), None)),
            Err(_) => None,
        }
    }

    /// Every signer of `pool`'s set stored presignature `seq`: `made` rises
    /// to it (never falls).
    async fn record_made(&self, pool: PoolId, seq: u32) {
        for _ in 0..TAKE_TRIES {
            let Some((mut record, revision)) = self.pool_record(pool).await else { return };
            if record.made >= seq {
                return;
            }
            record.made = seq;
            let key = pool.to_string();
            let written = match revision {
                Some(revision) => self.registry.update(Bucket::Pools, &key, encode(&record), revision).await,
                None => self.registry.create(Bucket::Pools, &key, encode(&record)).await.map(drop),
            };
            if written.is_ok() {
                return;
            }
        }
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
    pub(crate) fn presigned(&self, request: &RequestId, error: Option<RequestError>) {
        let waiter = self.presigning.lock().expect("presigning lock").remove(request);
        match waiter {
            Some(waiter) => {
                let _ = waiter.send(error);
            }
            // A set this node is in but does not keep: its keeper counts.
            None => {
                if let Some(e) = error {
                    tracing::warn!(request = %request, code = %e.code, reason = %e.reason, "presignature not made");
                }
            }
        }
    }

    /// Keeps the pools of the sets this node heads filled, one
    /// presignature at a time, whenever this node runs no attempt and
    /// follows no request.
    pub async fn keep_pools(self: Arc<Self>) {
        if !self.config.presign_pools.any() {
            return;
        }
        let mut tick = tokio::time::interval(self.config.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                    let Some((record, _)) = self.pool_record(pool).await else { return false };
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
            Ok(Ok(None)) => {
                self.record_made(pool, seq).await;
                self.metrics.inc("conclave_presignatures_total", "made");
                true
            }
            _ => {
                self.metrics.inc("conclave_presignatures_total", "failed");
                false
            }
        }
    }
}
