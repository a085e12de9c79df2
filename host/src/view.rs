//! This host's live view of the registry: who is ready, who is registered,
//! and which request records changed. One watch per bucket keeps it, so
//! that no question costs a JetStream consumer (a consumer per question,
//! at a few requests a second on three hosts, exhausts the server's limit).
//!
//! A node counts as ready while its last heartbeat arrived here within the
//! readiness TTL. The view is current only while this node's own heartbeats
//! come back through it: if they stop (NATS failing over, this host cut
//! off), the view says nothing about the peers either.

use crate::registry::Registry;
use async_nats::jetstream::kv;
use conclave_proto::{NodeId, RequestId};
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The view is not current (see the module docs).
#[derive(Debug, thiserror::Error)]
#[error("this host's view of the registry is not current: its own heartbeat has not come back within {0:?}")]
pub struct NotCurrent(Duration);

/// The live view.
pub struct RegistryView {
    me: NodeId,
    ttl: Duration,
    ready: Mutex<HashMap<NodeId, Instant>>,
    members: Mutex<HashSet<NodeId>>,
    /// Followers waiting for their request's records to change.
    waiting: Mutex<HashMap<String, Arc<Notify>>>,
}

/// A follower's registration; dropping it unregisters.
pub struct RecordWatch {
    view: Arc<RegistryView>,
    key: String,
    notify: Arc<Notify>,
}

impl RecordWatch {
    /// Resolves at the next change of the request's records (or at once if
    /// one happened since the last call).
    pub async fn changed(&self) {
        self.notify.notified().await
    }
}

impl Drop for RecordWatch {
    fn drop(&mut self) {
        let mut waiting = self.view.waiting.lock().expect("view lock");
        // Several followers of one request on this host never coexist (see
        // `Host::follow`), but a keygen confirmation shares the key.
        if Arc::strong_count(&self.notify) <= 2 {
            waiting.remove(&self.key);
        }
    }
}

impl RegistryView {
    /// An empty view for node `me`, whose heartbeats count for `ttl`.
    pub fn new(me: NodeId, ttl: Duration) -> Arc<RegistryView> {
        Arc::new(RegistryView { me, ttl, ready: Mutex::default(), members: Mutex::default(), waiting: Mutex::default() })
    }

    /// Nodes whose heartbeat arrived within the TTL, if the view is current.
    pub fn ready(&self) -> Result<HashSet<NodeId>, NotCurrent> {
        let fresh = self.fresh();
        if !fresh.contains(&self.me) {
            return Err(NotCurrent(self.ttl));
        }
        Ok(fresh)
    }

    /// Nodes whose heartbeat arrived within the TTL, current or not (for
    /// health reporting only).
    pub fn ready_count(&self) -> usize {
        self.fresh().len()
    }

    fn fresh(&self) -> HashSet<NodeId> {
        let ready = self.ready.lock().expect("view lock");
        ready.iter().filter(|(_, at)| at.elapsed() <= self.ttl).map(|(n, _)| n.clone()).collect()
    }

    /// Registered nodes.
    pub fn member_count(&self) -> usize {
        self.members.lock().expect("view lock").len()
    }

    /// Registers interest in the records of request `id` (its fencing record
    /// and its keygen confirmations).
    pub fn watch_request(self: &Arc<Self>, id: &RequestId) -> RecordWatch {
        let key = id.to_string();
        let notify = self.waiting.lock().expect("view lock").entry(key.clone()).or_default().clone();
        RecordWatch { view: self.clone(), key, notify }
    }

    /// Nodes that are ready, waiting up to `patience` for the view to
    /// become current (a NATS server failing over takes a few seconds).
    pub async fn ready_within(&self, patience: Duration) -> Result<HashSet<NodeId>, NotCurrent> {
        let until = Instant::now() + patience;
        loop {
            match self.ready() {
                Ok(ready) => return Ok(ready),
                Err(e) if Instant::now() >= until => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Keeps the view up to date for the life of the process.
    pub async fn run(self: Arc<Self>, registry: &Registry) {
        let (ready, members, sessions) = (registry.ready.clone(), registry.members.clone(), registry.sessions.clone());
        let ready = keep(ready, true, {
            let view = self.clone();
            move |entry| {
                if let Ok(node) = NodeId::new(&entry.key) {
                    let mut ready = view.ready.lock().expect("view lock");
                    match entry.operation {
                        kv::Operation::Put => ready.insert(node, Instant::now()),
                        kv::Operation::Delete | kv::Operation::Purge => ready.remove(&node),
                    };
                }
            }
        });
        let members = keep(members, true, {
            let view = self.clone();
            move |entry| {
                if let Ok(node) = NodeId::new(&entry.key) {
                    let mut members = view.members.lock().expect("view lock");
                    match entry.operation {
                        kv::Operation::Put => members.insert(node),
                        kv::Operation::Delete | kv::Operation::Purge => members.remove(&node),
                    };
                }
            }
        });
        let sessions = keep(sessions, false, {
            let view = self.clone();
            move |entry| {
                let request = entry.key.split('.').next().unwrap_or_default();
                if let Some(notify) = view.waiting.lock().expect("view lock").get(request) {
                    notify.notify_one();
                }
            }
        });
        tokio::join!(ready, members, sessions);
    }
}

/// Applies every change of `bucket` (with its current contents first if
/// `history`), re-opening the watch whenever it breaks.
async fn keep(bucket: kv::Store, history: bool, mut apply: impl FnMut(kv::Entry)) {
    loop {
        let watch = if history { bucket.watch_with_history(">").await } else { bucket.watch_all().await };
        match watch {
            Ok(mut watch) => {
                while let Some(Ok(entry)) = watch.next().await {
                    apply(entry);
                }
                tracing::warn!("registry watch ended; reopening it");
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch the registry; trying again"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
