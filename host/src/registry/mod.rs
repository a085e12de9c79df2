//! The peer registry: who is registered, who is ready, which wallets exist,
//! and the compare-and-set records that fence each request. One interface,
//! two backends: NATS KV (the default) and Consul. Streams and envelopes
//! stay on NATS whichever registry holds these records.
//!
//! Both backends give the same guarantees, which is what the coordinator
//! relies on (and what `tests/tests/registry.rs` checks on both):
//! - `create` succeeds for exactly one writer of a key; `update` only for a
//!   writer that read the current revision;
//! - a readiness heartbeat disappears on its own when the node stops
//!   renewing it (NATS: the bucket's max age; Consul: a session TTL with
//!   `Behavior=delete`);
//! - a watch sees the current contents, then every later change.

mod agent;
mod consul;
mod natskv;

pub use consul::{ConsulConfig, ConsulError};

use crate::nats::Nats;
use bytes::Bytes;
use conclave_proto::RequestId;
use futures::stream::BoxStream;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// The registry's buckets (Consul: folders under the key prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// Registered nodes ([`conclave_proto::registry::NodeRecord`]).
    Members,
    /// Readiness heartbeats ([`conclave_proto::registry::ReadyRecord`]); they expire.
    Ready,
    /// Public wallet records, for routing.
    Wallets,
    /// Fencing records ([`conclave_proto::registry::SessionRecord`]) and
    /// keygen confirmations (`<request>.stored.<node>`).
    Sessions,
    /// Presignature pools' counters ([`conclave_proto::registry::PoolRecord`]).
    Pools,
}

impl Bucket {
    /// The bucket's name: a NATS KV bucket, or a folder under the Consul prefix.
    pub fn name(self) -> &'static str {
        use conclave_proto::subjects::*;
        match self {
            Bucket::Members => MEMBERS_BUCKET,
            Bucket::Ready => READY_BUCKET,
            Bucket::Wallets => WALLETS_BUCKET,
            Bucket::Sessions => SESSIONS_BUCKET,
            Bucket::Pools => POOLS_BUCKET,
        }
    }

    /// The bucket's folder under the Consul key prefix.
    pub fn folder(self) -> &'static str {
        match self {
            Bucket::Members => "members",
            Bucket::Ready => "ready",
            Bucket::Wallets => "wallets",
            Bucket::Sessions => "sessions",
            Bucket::Pools => "pools",
        }
    }
}

/// A stored value and the revision a compare-and-set must name to replace it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The value.
    pub value: Bytes,
    /// NATS: the stream sequence; Consul: the key's `ModifyIndex`.
    pub revision: u64,
}

/// One change seen by a watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// `key` was written (or is there when the watch starts).
    Put {
        /// The key within its bucket.
        key: String,
        /// Its value.
        value: Bytes,
    },
    /// `key` was deleted or expired.
    Delete {
        /// The key within its bucket.
        key: String,
    },
}

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A `create` found the key, or an `update` a newer revision: another
    /// writer won. Not an outage; never retried.
    #[error("{bucket}/{key} was changed by another writer")]
    Conflict {
        /// The bucket.
        bucket: &'static str,
        /// The key.
        key: String,
    },
    /// The registry refused the call for good: an ACL denies it (Consul
    /// 401/403), or it does not serve it. Never retried.
    #[error("registry {op} on {bucket} refused ({status}): {detail}")]
    Refused {
        /// What was attempted.
        op: &'static str,
        /// The bucket.
        bucket: &'static str,
        /// The HTTP status.
        status: u16,
        /// The backend's answer.
        detail: String,
    },
    /// The registry could not be reached, or failed the call in a way that
    /// may pass (a leader election, a timeout, a server error).
    #[error("registry {op} on {bucket}: {detail}")]
    Unavailable {
        /// What was attempted.
        op: &'static str,
        /// The bucket.
        bucket: &'static str,
        /// The backend's answer.
        detail: String,
    },
    /// The registry could not be set up at start.
    #[error("cannot set up the registry: {0}")]
    Setup(String),
}

impl crate::nats::Transient for RegistryError {
    fn transient(&self) -> bool {
        // Setup: the servers may still be starting.
        matches!(self, RegistryError::Unavailable { .. } | RegistryError::Setup(_))
    }
}

/// Which backend holds the registry, from the host configuration.
#[derive(Debug, Clone)]
pub enum RegistryConfig {
    /// NATS KV buckets on the same NATS servers as the streams.
    Nats,
    /// A Consul agent's KV store and sessions.
    Consul(ConsulConfig),
}

/// The registry, on either backend.
pub enum Registry {
    /// NATS KV (boxed: four bucket handles are large).
    Nats(Box<natskv::NatsKv>),
    /// Consul.
    Consul(consul::ConsulKv),
}

impl Registry {
    /// Opens the configured backend. `ready_ttl` is how long a heartbeat
    /// lasts without renewal; `replicas` how many copies NATS keeps.
    pub async fn open(config: &RegistryConfig, nats: &Nats, ready_ttl: Duration, replicas: usize) -> Result<Registry, RegistryError> {
        match config {
            RegistryConfig::Nats => Registry::nats(&nats.js, ready_ttl, replicas).await,
            RegistryConfig::Consul(c) => Registry::consul(c, ready_ttl),
        }
    }

    /// The registry in NATS KV buckets, created if missing.
    pub async fn nats(js: &async_nats::jetstream::Context, ready_ttl: Duration, replicas: usize) -> Result<Registry, RegistryError> {
        Ok(Registry::Nats(Box::new(natskv::NatsKv::open(js, ready_ttl, replicas).await?)))
    }

    /// The registry on a Consul agent (nothing is called until first use).
    pub fn consul(config: &ConsulConfig, ready_ttl: Duration) -> Result<Registry, RegistryError> {
        Ok(Registry::Consul(consul::ConsulKv::open(config, ready_ttl).map_err(|e| RegistryError::Setup(e.to_string()))?))
    }

    /// The backend's name, for logs and status.
    pub fn backend(&self) -> &'static str {
        match self {
            Registry::Nats(_) => "nats",
            Registry::Consul(_) => "consul",
        }
    }

    /// Reads `key`.
    pub async fn get(&self, bucket: Bucket, key: &str) -> Result<Option<Entry>, RegistryError> {
        match self {
            Registry::Nats(r) => r.get(bucket, key).await,
            Registry::Consul(r) => r.get(bucket, key).await,
        }
    }

    /// Every key of `bucket` and its value, sorted by key.
    pub async fn list(&self, bucket: Bucket) -> Result<Vec<(String, Bytes)>, RegistryError> {
        let mut entries = match self {
            Registry::Nats(r) => r.list(bucket).await?,
            Registry::Consul(r) => r.list(bucket).await?,
        };
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(entries)
    }

    /// Writes `key` whatever it held.
    pub async fn put(&self, bucket: Bucket, key: &str, value: Bytes) -> Result<(), RegistryError> {
        match self {
            Registry::Nats(r) => r.put(bucket, key, value).await,
            Registry::Consul(r) => r.put(bucket, key, value).await,
        }
    }

    /// Writes `key` only if it does not exist: exactly one writer wins.
    /// Returns the written revision where the backend says it (NATS KV;
    /// Consul's check-and-set answers only whether it wrote).
    pub async fn create(&self, bucket: Bucket, key: &str, value: Bytes) -> Result<Option<u64>, RegistryError> {
        match self {
            Registry::Nats(r) => r.create(bucket, key, value).await.map(Some),
            Registry::Consul(r) => r.update(bucket, key, value, 0).await.map(|()| None),
        }
    }

    /// Writes `key` only if it is still at `revision`.
    pub async fn update(&self, bucket: Bucket, key: &str, value: Bytes, revision: u64) -> Result<(), RegistryError> {
        match self {
            Registry::Nats(r) => r.update(bucket, key, value, revision).await,
            Registry::Consul(r) => r.update(bucket, key, value, revision).await,
        }
    }

    /// Records (or renews) a readiness heartbeat for this node, which
    /// disappears by itself if not renewed within the readiness TTL.
    pub async fn heartbeat(&self, node: &conclave_proto::NodeId, value: Bytes) -> Result<(), RegistryError> {
        match self {
            Registry::Nats(r) => r.put(Bucket::Ready, node.as_str(), value).await,
            Registry::Consul(r) => r.heartbeat(node, value).await,
        }
    }

    /// Removes this node's readiness at once (its signer link went down), so
    /// that no peer plans a session with it until its next heartbeat.
    pub async fn withdraw(&self, node: &conclave_proto::NodeId) -> Result<(), RegistryError> {
        match self {
            Registry::Nats(r) => r.delete(Bucket::Ready, node.as_str()).await,
            Registry::Consul(r) => r.delete(Bucket::Ready, node.as_str()).await,
        }
    }

    /// The bucket's current contents, then every change, until the
    /// connection breaks (the caller opens a new watch).
    pub async fn watch(&self, bucket: Bucket) -> Result<BoxStream<'static, Change>, RegistryError> {
        match self {
            Registry::Nats(r) => r.watch(bucket).await,
            Registry::Consul(r) => Ok(r.watch(bucket)),
        }
    }

    /// Wakes the caller whenever a record of request `id` changes (its
    /// fencing record or a keygen confirmation). On NATS one watch of the
    /// whole bucket serves every request (a consumer per request exhausts
    /// the server's limit under load); on Consul each watch is a blocking
    /// query on the request's keys (a query of the whole folder would carry
    /// every record ever kept at each change).
    /// Changes after this returns are never missed.
    pub async fn watch_request(&self, id: &RequestId) -> RecordWatch {
        match self {
            Registry::Nats(r) => r.watch_request(id.as_str()),
            Registry::Consul(r) => r.watch_request(id.as_str()).await,
        }
    }
}

/// A follower's interest in one request's records; dropping it ends it.
pub struct RecordWatch {
    notify: Arc<Notify>,
    /// The newest version of the request's record that the shared watch
    /// delivered since this follower registered (NATS only).
    seen: Option<Arc<Mutex<Option<Entry>>>>,
    guard: WatchGuard,
}

enum WatchGuard {
    /// Registered with a shared bucket watch.
    Shared { requests: Arc<RequestWaiters>, key: String },
    /// A watch of its own.
    Own(tokio::task::AbortHandle),
}

impl RecordWatch {
    /// Resolves at the next change of the request's records (or at once if
    /// one happened since the last call).
    pub async fn changed(&self) {
        self.notify.notified().await
    }

    /// The request's record as the watch last delivered it, if newer than
    /// `revision`; `Err` if this watch cannot tell (Consul: the follower
    /// reads the registry).
    pub fn newer_than(&self, revision: u64) -> Result<Option<Entry>, Unknown> {
        let seen = self.seen.as_ref().ok_or(Unknown)?;
        Ok(seen.lock().expect("seen lock").as_ref().filter(|e| e.revision > revision).cloned())
    }
}

/// What a [`RecordWatch`] cannot tell: read the registry instead.
#[derive(Debug)]
pub struct Unknown;

impl Drop for RecordWatch {
    fn drop(&mut self) {
        match &self.guard {
            WatchGuard::Shared { requests, key } => requests.unregister(key),
            WatchGuard::Own(task) => task.abort(),
        }
    }
}

/// Followers of requests, woken by one shared watch of the records.
#[derive(Default)]
pub struct RequestWaiters {
    /// Per request: who to wake, the newest version of its record seen
    /// since, and how many watches share it (a keygen's follower and its
    /// confirmation watch the same request).
    waiting: Mutex<HashMap<String, Waiting>>,
    /// The latest records of requests nobody here watched yet: a host that
    /// takes a request after another host created its record finds the
    /// record as the watch delivered it, rather than waiting for a change.
    recent: Mutex<Recent>,
}

/// How many unwatched requests' records [`RequestWaiters`] keeps: at a few
/// hundred requests a second, the last seconds' worth, where hosts take the
/// same request within milliseconds of one another.
const RECENT_RECORDS: usize = 4096;

/// Records by request, forgotten oldest first.
#[derive(Default)]
struct Recent {
    records: HashMap<String, Entry>,
    order: std::collections::VecDeque<String>,
}

impl Recent {
    fn keep(&mut self, request: &str, entry: Entry) {
        if self.records.insert(request.to_owned(), entry).is_none() {
            self.order.push_back(request.to_owned());
            if self.order.len() > RECENT_RECORDS {
                if let Some(oldest) = self.order.pop_front() {
                    self.records.remove(&oldest);
                }
            }
        }
    }
}

#[derive(Default)]
struct Waiting {
    notify: Arc<Notify>,
    seen: Arc<Mutex<Option<Entry>>>,
    watches: usize,
}

impl Waiting {
    /// Keeps `entry` as the record seen if it is newer; whether it was.
    fn see(&self, entry: Entry) -> bool {
        let mut seen = self.seen.lock().expect("seen lock");
        let newer = seen.as_ref().is_none_or(|s| s.revision < entry.revision);
        if newer {
            *seen = Some(entry);
        }
        newer
    }
}

impl RequestWaiters {
    fn register(self: &Arc<Self>, key: &str) -> RecordWatch {
        let mut waiting = self.waiting.lock().expect("waiters lock");
        let slot = waiting.entry(key.to_owned()).or_default();
        slot.watches += 1;
        // Taken out (the slot keeps what comes next); the lock order is
        // `waiting`, then `recent`, as in `wake`.
        if let Some(entry) = self.recent.lock().expect("recent lock").records.remove(key) {
            if slot.see(entry) {
                slot.notify.notify_one();
            }
        }
        RecordWatch { notify: slot.notify.clone(), seen: Some(slot.seen.clone()), guard: WatchGuard::Shared { requests: self.clone(), key: key.to_owned() } }
    }

    fn unregister(&self, key: &str) {
        let mut waiting = self.waiting.lock().expect("waiters lock");
        if let Some(slot) = waiting.get_mut(key) {
            slot.watches -= 1;
            if slot.watches == 0 {
                waiting.remove(key);
            }
        }
    }

    /// A record under `key` changed (`put`: its new value): wake its
    /// request's followers. Record keys are `<request>` and
    /// `<request>.stored.<node>`; only the first is kept as seen.
    fn wake(&self, key: &str, put: Option<Entry>) {
        let request = key.split('.').next().unwrap_or_default();
        let waiting = self.waiting.lock().expect("waiters lock");
        let record = put.filter(|_| key == request);
        match waiting.get(request) {
            Some(slot) => {
                if let Some(entry) = record {
                    slot.see(entry);
                }
                slot.notify.notify_one();
            }
            None => {
                let mut recent = self.recent.lock().expect("recent lock");
                match record {
                    Some(entry) => recent.keep(request, entry),
                    // Deleted: nothing to find.
                    None if key == request => drop(recent.records.remove(request)),
                    None => {}
                }
            }
        }
    }
}
