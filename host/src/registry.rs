//! NATS: the streams, the registry buckets, and the handful of operations
//! the host performs on them.

use crate::config::HostConfig;
use async_nats::jetstream::{self, kv, stream};
use conclave_proto::result::RequestResult;
use conclave_proto::subjects::*;
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

/// How long one JetStream call waits for its answer.
const JS_TIMEOUT: Duration = Duration::from_millis(1500);

const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

impl Registry {
    /// Connects and makes sure every stream and bucket exists. Every host
    /// does this, so start order does not matter.
    pub async fn connect(config: &HostConfig) -> Result<Registry, RegistryError> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("conclave-host {}", config.node_id))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connect(config.nats_urls.as_slice())
            .await?;
        let mut js = jetstream::new(client.clone());
        // Fail fast and try again (see `retrying`): a call sent to a server
        // that just died, or to a stream electing its leader, would otherwise
        // hold up heartbeats for the default 5 s.
        js.set_timeout(JS_TIMEOUT);
        let dedup = Duration::from_secs(DEDUP_WINDOW_SECS);
        ensure_stream(&js, "request stream", stream::Config {
            name: REQUEST_STREAM.into(),
            subjects: vec![REQUEST_SUBJECTS.into()],
            duplicate_window: dedup,
            max_age: WEEK,
            max_message_size: 1024 * 1024,
            num_replicas: config.nats_replicas,
            ..Default::default()
        })
        .await?;
        ensure_stream(&js, "result stream", stream::Config {
            name: RESULT_STREAM.into(),
            subjects: vec![RESULT_SUBJECTS.into()],
            duplicate_window: dedup,
            max_age: WEEK,
            num_replicas: config.nats_replicas,
            ..Default::default()
        })
        .await?;
        let replicas = config.nats_replicas;
        let members = ensure_bucket(&js, MEMBERS_BUCKET, Duration::ZERO, replicas).await?;
        let ready = ensure_bucket(&js, READY_BUCKET, config.ready_ttl, replicas).await?;
        let wallets = ensure_bucket(&js, WALLETS_BUCKET, Duration::ZERO, replicas).await?;
        let sessions = ensure_bucket(&js, SESSIONS_BUCKET, WEEK, replicas).await?;
        Ok(Registry { client, js, members, ready, wallets, sessions })
    }

    /// Publishing again is harmless, so a publish that fails while the
    /// result stream elects a new leader is repeated.
    pub async fn publish_result(&self, result: &RequestResult) -> Result<(), async_nats::Error> {
        let payload: bytes::Bytes = serde_json::to_vec(result).expect("results serialise").into();
        retrying("publish a result", || async {
            let publish = jetstream::message::PublishMessage::build().payload(payload.clone()).message_id(result_msg_id(&result.request_id));
            self.js.send_publish(result_subject(&result.request_id), publish).await?.await?;
            Ok(())
        })
        .await
    }
}

/// How many times a registry call is tried, backing off from 100 ms to 2 s:
/// about 15 s in all, longer than a JetStream stream or bucket takes to
/// elect a new leader after losing a server.
const TRIES: u32 = 10;

/// Runs a JetStream call again while it fails.
pub async fn retrying<T, F, Fut>(what: &str, mut call: F) -> Result<T, async_nats::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, async_nats::Error>>,
{
    let mut delay = Duration::from_millis(100);
    let mut tried = 0;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                tried += 1;
                if tried >= TRIES {
                    return Err(e);
                }
                tracing::warn!(error = %e, tried, "cannot {what}; trying again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

async fn ensure_stream(js: &jetstream::Context, what: &'static str, config: stream::Config) -> Result<(), RegistryError> {
    js.get_or_create_stream(config).await.map(|_| ()).map_err(|e| RegistryError::Setup { what, detail: e.to_string() })
}

async fn ensure_bucket(js: &jetstream::Context, bucket: &'static str, max_age: Duration, replicas: usize) -> Result<kv::Store, RegistryError> {
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let created = js.create_key_value(kv::Config { bucket: bucket.into(), history: 1, max_age, num_replicas: replicas, ..Default::default() }).await;
    match created {
        Ok(store) => Ok(store),
        // Another host created it first.
        Err(e) => js.get_key_value(bucket).await.map_err(|_| RegistryError::Setup { what: bucket, detail: e.to_string() }),
    }
}
