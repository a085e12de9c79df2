//! The registry on NATS KV buckets (the default backend).

use super::{Bucket, Change, Entry, RecordWatch, RegistryError, RequestWaiters};
use crate::nats::WEEK;
use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// The four buckets, and the one watch of the fencing records.
pub struct NatsKv {
    members: kv::Store,
    ready: kv::Store,
    wallets: kv::Store,
    sessions: kv::Store,
    pools: kv::Store,
    requests: Arc<RequestWaiters>,
}

impl NatsKv {
    /// Opens the buckets, creating those that do not exist yet (every host
    /// does this, so start order does not matter), and starts the shared
    /// watch of the fencing records.
    pub(super) async fn open(js: &jetstream::Context, ready_ttl: Duration, replicas: usize) -> Result<NatsKv, RegistryError> {
        let members = ensure_bucket(js, Bucket::Members, Duration::ZERO, replicas).await?;
        // The heartbeat expires with the bucket's max age.
        let ready = ensure_bucket(js, Bucket::Ready, ready_ttl, replicas).await?;
        let wallets = ensure_bucket(js, Bucket::Wallets, Duration::ZERO, replicas).await?;
        // Records outlive the request stream's retention, so a redelivered
        // request always finds its fence.
        let sessions = ensure_bucket(js, Bucket::Sessions, WEEK, replicas).await?;
        // Pool counters never expire: a count that went back would hand out
        // presignatures the signers used already (they refuse, but the
        // pool would serve nothing).
        let pools = ensure_bucket(js, Bucket::Pools, Duration::ZERO, replicas).await?;
        let requests = Arc::new(RequestWaiters::default());
        // The first watch exists before anyone can register, so no change
        // after a registration is missed.
        let first = sessions.watch_all().await.map_err(|e| RegistryError::Setup(format!("watch of {}: {e}", Bucket::Sessions.name())))?;
        tokio::spawn(wake_followers(sessions.clone(), first, requests.clone()));
        Ok(NatsKv { members, ready, wallets, sessions, pools, requests })
    }

    fn store(&self, bucket: Bucket) -> &kv::Store {
        match bucket {
            Bucket::Members => &self.members,
            Bucket::Ready => &self.ready,
            Bucket::Wallets => &self.wallets,
            Bucket::Sessions => &self.sessions,
            Bucket::Pools => &self.pools,
        }
    }

    pub(super) async fn get(&self, bucket: Bucket, key: &str) -> Result<Option<Entry>, RegistryError> {
        let entry = self.store(bucket).entry(key).await.map_err(|e| unavailable("get", bucket, e))?;
        Ok(entry.filter(|e| e.operation == kv::Operation::Put).map(|e| Entry { value: e.value, revision: e.revision }))
    }

    pub(super) async fn list(&self, bucket: Bucket) -> Result<Vec<(String, Bytes)>, RegistryError> {
        use futures::TryStreamExt;
        let keys: Vec<String> =
            self.store(bucket).keys().await.map_err(|e| unavailable("list", bucket, e))?.try_collect().await.map_err(|e| unavailable("list", bucket, e))?;
        let mut entries = Vec::with_capacity(keys.len());
        for key in keys {
            // A key deleted between the listing and the read is skipped.
            if let Some(entry) = self.get(bucket, &key).await? {
                entries.push((key, entry.value));
            }
        }
        Ok(entries)
    }

    pub(super) async fn put(&self, bucket: Bucket, key: &str, value: Bytes) -> Result<(), RegistryError> {
        self.store(bucket).put(key, value).await.map(|_| ()).map_err(|e| unavailable("put", bucket, e))
    }

    pub(super) async fn delete(&self, bucket: Bucket, key: &str) -> Result<(), RegistryError> {
        self.store(bucket).delete(key).await.map_err(|e| unavailable("delete", bucket, e))
    }

    pub(super) async fn create(&self, bucket: Bucket, key: &str, value: Bytes) -> Result<u64, RegistryError> {
        match self.store(bucket).create(key, value).await {
            Ok(revision) => Ok(revision),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Err(RegistryError::Conflict { bucket: bucket.name(), key: key.into() }),
            Err(e) => Err(unavailable("create", bucket, e)),
        }
    }

    pub(super) async fn update(&self, bucket: Bucket, key: &str, value: Bytes, revision: u64) -> Result<(), RegistryError> {
        match self.store(bucket).update(key, value, revision).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(RegistryError::Conflict { bucket: bucket.name(), key: key.into() }),
            Err(e) => Err(unavailable("update", bucket, e)),
        }
    }

    pub(super) fn watch_request(&self, id: &str) -> RecordWatch {
        self.requests.register(id)
    }

    pub(super) async fn watch(&self, bucket: Bucket) -> Result<futures::stream::BoxStream<'static, Change>, RegistryError> {
        let watch = self.store(bucket).watch_with_history(">").await.map_err(|e| unavailable("watch", bucket, e))?;
        Ok(watch.take_while(|entry| std::future::ready(entry.is_ok())).filter_map(|entry| std::future::ready(entry.ok().map(change))).boxed())
    }
}

fn change(entry: kv::Entry) -> Change {
    match entry.operation {
        kv::Operation::Put => Change::Put { key: entry.key, value: entry.value },
        kv::Operation::Delete | kv::Operation::Purge => Change::Delete { key: entry.key },
    }
}

fn unavailable(op: &'static str, bucket: Bucket, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Unavailable { op, bucket: bucket.name(), detail: e.to_string() }
}

/// Wakes followers at each change of the records, re-opening the watch
/// whenever it breaks, for the life of the process.
async fn wake_followers(sessions: kv::Store, mut watch: kv::Watch, requests: Arc<RequestWaiters>) {
    loop {
        while let Some(Ok(entry)) = watch.next().await {
            let put = (entry.operation == kv::Operation::Put).then(|| Entry { value: entry.value, revision: entry.revision });
            requests.wake(&entry.key, put);
        }
        tracing::warn!("registry watch ended; reopening it");
        watch = loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            match sessions.watch_all().await {
                Ok(watch) => break watch,
                Err(e) => tracing::warn!(error = %e, "cannot watch the registry; trying again"),
            }
        };
    }
}

async fn ensure_bucket(js: &jetstream::Context, bucket: Bucket, max_age: Duration, replicas: usize) -> Result<kv::Store, RegistryError> {
    let name = bucket.name();
    if let Ok(store) = js.get_key_value(name).await {
        return Ok(store);
    }
    let created = js.create_key_value(kv::Config { bucket: name.into(), history: 1, max_age, num_replicas: replicas, ..Default::default() }).await;
    match created {
        Ok(store) => Ok(store),
        // Another host created it first.
        Err(e) => js.get_key_value(name).await.map_err(|_| RegistryError::Setup(format!("bucket {name}: {e}"))),
    }
}
