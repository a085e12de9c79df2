//! NATS: the streams, the registry buckets, and the handful of operations
//! the host performs on them.

use crate::config::HostConfig;
use async_nats::jetstream::{self, kv, stream};
use conclave_proto::result::RequestResult;
use conclave_proto::subjects::*;
use conclave_proto::NodeId;
use futures::TryStreamExt;
use std::collections::HashSet;
use std::time::Duration;

/// Why NATS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Connecting failed.
    #[error("cannot connect to NATS: {0}")]
    Connect(#[from] async_nats::ConnectError),
    /// A stream or bucket could not be created or opened.
    #[error("cannot set up {what}: {detail}")]
    Setup {
        /// The stream or bucket.
        what: &'static str,
        /// The server's answer.
        detail: String,
    },
}

/// Handles on everything the host uses in NATS.
pub struct Registry {
    /// Core NATS.
    pub client: async_nats::Client,
    /// JetStream.
    pub js: jetstream::Context,
    /// Registered nodes.
    pub members: kv::Store,
    /// Readiness heartbeats (expiring).
    pub ready: kv::Store,
    /// Public wallet records.
    pub wallets: kv::Store,
    /// Fencing records.
    pub sessions: kv::Store,
}

const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

impl Registry {
    /// Connects and makes sure every stream and bucket exists. Every host
    /// does this, so start order does not matter.
    pub async fn connect(config: &HostConfig) -> Result<Registry, RegistryError> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("conclave-host {}", config.node_id))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connect(config.nats_urls.join(","))
            .await?;
        let js = jetstream::new(client.clone());
        let dedup = Duration::from_secs(DEDUP_WINDOW_SECS);
        ensure_stream(&js, "request stream", stream::Config {
            name: REQUEST_STREAM.into(),
            subjects: vec![REQUEST_SUBJECTS.into()],
            duplicate_window: dedup,
            max_age: WEEK,
            max_message_size: 1024 * 1024,
            ..Default::default()
        })
        .await?;
        ensure_stream(&js, "result stream", stream::Config {
            name: RESULT_STREAM.into(),
            subjects: vec![RESULT_SUBJECTS.into()],
            duplicate_window: dedup,
            max_age: WEEK,
            ..Default::default()
        })
        .await?;
        let members = ensure_bucket(&js, MEMBERS_BUCKET, Duration::ZERO).await?;
        let ready = ensure_bucket(&js, READY_BUCKET, config.ready_ttl).await?;
        let wallets = ensure_bucket(&js, WALLETS_BUCKET, Duration::ZERO).await?;
        let sessions = ensure_bucket(&js, SESSIONS_BUCKET, WEEK).await?;
        Ok(Registry { client, js, members, ready, wallets, sessions })
    }

    /// Nodes with a live readiness heartbeat.
    pub async fn ready_nodes(&self) -> HashSet<NodeId> {
        keys(&self.ready).await.into_iter().filter_map(|k| NodeId::new(k).ok()).collect()
    }

    /// How many nodes are registered.
    pub async fn member_count(&self) -> usize {
        keys(&self.members).await.len()
    }

    /// Publishes a request's result; JetStream keeps only the first one
    /// published for a request (message-id deduplication).
    pub async fn publish_result(&self, result: &RequestResult) -> Result<(), String> {
        let payload = serde_json::to_vec(result).expect("results serialise");
        let publish = jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .message_id(result_msg_id(&result.request_id));
        self.js
            .send_publish(result_subject(&result.request_id), publish)
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        Ok(())
    }
}

async fn keys(store: &kv::Store) -> Vec<String> {
    match store.keys().await {
        Ok(keys) => keys.try_collect().await.unwrap_or_default(),
        Err(_) => Vec::new(),
    }
}

async fn ensure_stream(js: &jetstream::Context, what: &'static str, config: stream::Config) -> Result<(), RegistryError> {
    js.get_or_create_stream(config).await.map(|_| ()).map_err(|e| RegistryError::Setup { what, detail: e.to_string() })
}

async fn ensure_bucket(js: &jetstream::Context, bucket: &'static str, max_age: Duration) -> Result<kv::Store, RegistryError> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let created = js.create_key_value(kv::Config { bucket: bucket.into(), history: 1, max_age, ..Default::default() }).await;
    match created {
        Ok(store) => Ok(store),
        // Another host created it first.
        Err(e) => js.get_key_value(bucket).await.map_err(|_| RegistryError::Setup { what: bucket, detail: e.to_string() }),
    }
}
