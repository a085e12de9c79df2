//! This host's live view of the registry: who is ready and who is
//! registered, with their latest records. One watch per bucket keeps it, so
//! that no question costs a registry call.
//!
//! A node counts as ready while its last heartbeat arrived here within the
//! readiness TTL. The view is current only while this node's own heartbeats
//! come back through it: if they stop (NATS or Consul failing over, this
//! host cut off), the view says nothing about the peers either.

use crate::registry::{Bucket, Change, Registry};
use conclave_proto::registry::{NodeRecord, ReadyRecord};
use conclave_proto::result::KeygenResult;
use conclave_proto::statement::Endorsed;
use conclave_proto::NodeId;
use futures::StreamExt;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The view is not current (see the module docs).
#[derive(Debug, thiserror::Error)]
#[error("this host's view of the registry is not current: its own heartbeat has not come back within {0:?}")]
pub struct NotCurrent(Duration);

/// The live view.
pub struct RegistryView {
    me: NodeId,
    ttl: Duration,
    ready: Mutex<HashMap<NodeId, (Instant, ReadyRecord)>>,
    members: Mutex<HashMap<NodeId, NodeRecord>>,
    /// Wallet records by registry key (`<wallet>.<scheme>`), unverified:
    /// for routing, like the registry's.
    wallets: Mutex<HashMap<String, KeygenResult>>,
}

impl RegistryView {
    /// An empty view for node `me`, whose heartbeats count for `ttl`.
    pub fn new(me: NodeId, ttl: Duration) -> std::sync::Arc<RegistryView> {
        std::sync::Arc::new(RegistryView { me, ttl, ready: Mutex::default(), members: Mutex::default(), wallets: Mutex::default() })
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

    /// Nodes whose heartbeat arrived within the TTL, current or not, sorted
    /// (for health reporting only).
    pub fn ready_nodes(&self) -> Vec<NodeId> {
        let mut nodes: Vec<NodeId> = self.fresh().into_iter().collect();
        nodes.sort();
        nodes
    }

    fn fresh(&self) -> HashSet<NodeId> {
        let ready = self.ready.lock().expect("view lock");
        ready.iter().filter(|(_, (at, _))| at.elapsed() <= self.ttl).map(|(n, _)| n.clone()).collect()
    }

    /// Registered nodes.
    pub fn member_count(&self) -> usize {
        self.members.lock().expect("view lock").len()
    }

    /// Every registered node with its record and, if it counts as ready,
    /// its latest heartbeat; sorted by node id.
    pub fn nodes(&self) -> Vec<(NodeId, NodeRecord, Option<ReadyRecord>)> {
        let members = self.members.lock().expect("view lock").clone();
        let ready = self.ready.lock().expect("view lock");
        let mut nodes: Vec<_> = members
            .into_iter()
            .map(|(id, record)| {
                let beat = ready.get(&id).filter(|(at, _)| at.elapsed() <= self.ttl).map(|(_, beat)| beat.clone());
                (id, record, beat)
            })
            .collect();
        nodes.sort_by(|a, b| a.0.cmp(&b.0));
        nodes
    }

    /// The wallet record under registry key `key`, as last seen.
    pub fn wallet(&self, key: &str) -> Option<KeygenResult> {
        self.wallets.lock().expect("view lock").get(key).cloned()
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
    pub async fn run(&self, registry: &Registry) {
        let ready = keep(registry, Bucket::Ready, |change| {
            let mut ready = self.ready.lock().expect("view lock");
            match change {
                Change::Put { key, value } => {
                    // A heartbeat must name the key it is stored under.
                    match (NodeId::new(&key), serde_json::from_slice::<ReadyRecord>(&value)) {
                        (Ok(node), Ok(beat)) if beat.node_id == node => {
                            ready.insert(node, (Instant::now(), beat));
                        }
                        _ => tracing::warn!(key, "ignoring an unreadable readiness record"),
                    }
                }
                Change::Delete { key } => {
                    if let Ok(node) = NodeId::new(&key) {
                        ready.remove(&node);
                    }
                }
            }
        });
        let members = keep(registry, Bucket::Members, |change| {
            let mut members = self.members.lock().expect("view lock");
            match change {
                Change::Put { key, value } => match (NodeId::new(&key), serde_json::from_slice::<NodeRecord>(&value)) {
                    (Ok(node), Ok(record)) => {
                        members.insert(node, record);
                    }
                    _ => tracing::warn!(key, "ignoring an unreadable member record"),
                },
                Change::Delete { key } => {
                    if let Ok(node) = NodeId::new(&key) {
                        members.remove(&node);
                    }
                }
            }
        });
        let wallets = keep(registry, Bucket::Wallets, |change| {
            let mut wallets = self.wallets.lock().expect("view lock");
            match change {
                Change::Put { key, value } => match routing_record(&value) {
                    Some(record) => {
                        wallets.insert(key, record);
                    }
                    None => tracing::warn!(key, "ignoring an unreadable wallet record"),
                },
                Change::Delete { key } => {
                    wallets.remove(&key);
                }
            }
        });
        tokio::join!(ready, members, wallets);
    }
}

/// A wallet record as the registry stores it (the committee's endorsed
/// statement), read without checking its signatures: hosts route by it,
/// signers and clients check it.
pub(crate) fn routing_record(value: &[u8]) -> Option<KeygenResult> {
    serde_json::from_slice::<Endorsed>(value).ok()?.unverified_record()
}

/// Applies every change of `bucket` (its current contents first),
/// re-opening the watch whenever it breaks.
async fn keep(registry: &Registry, bucket: Bucket, mut apply: impl FnMut(Change)) {
    loop {
        match registry.watch(bucket).await {
            Ok(mut watch) => {
                while let Some(change) = watch.next().await {
                    apply(change);
                }
                tracing::warn!(bucket = bucket.name(), "registry watch ended; reopening it");
            }
            Err(e) => tracing::warn!(error = %e, "cannot watch the registry; trying again"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
