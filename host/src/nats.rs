//! NATS: the connection, the request and result streams, and publishing
//! results. The registry (members, readiness, wallets, fencing records) is
//! in [`crate::registry`], on NATS KV or Consul.

use crate::config::HostConfig;
use async_nats::jetstream::{self, stream};
use conclave_proto::result::RequestResult;
use conclave_proto::subjects::*;
use std::fmt::Display;
use std::time::Duration;

/// Why NATS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NatsError {
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

/// Handles on NATS: core for envelopes, JetStream for requests and results.
#[derive(Clone)]
pub struct Nats {
    /// Core NATS.
    pub client: async_nats::Client,
    /// JetStream.
    pub js: jetstream::Context,
}

/// How long one JetStream call waits for its answer.
const JS_TIMEOUT: Duration = Duration::from_millis(1500);

/// How long streams keep requests and results.
pub const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

impl Nats {
    /// Connects and makes sure both streams exist. Every host does this, so
    /// start order does not matter.
    pub async fn connect(config: &HostConfig) -> Result<Nats, NatsError> {
        let client = conclave_proto::nats_access::connect_options(config.nats_ca_file.as_deref(), config.nats_nkey_file.as_deref())
            .map_err(|e| NatsError::Setup { what: "the NATS connection", detail: e.to_string() })?
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
        ensure_stream(
            &js,
            "request stream",
            stream::Config {
                name: REQUEST_STREAM.into(),
                subjects: vec![REQUEST_SUBJECTS.into()],
                duplicate_window: dedup,
                max_age: WEEK,
                max_message_size: 1024 * 1024,
                num_replicas: config.nats_replicas,
                ..Default::default()
            },
        )
        .await?;
        ensure_stream(
            &js,
            "result stream",
            stream::Config {
                name: RESULT_STREAM.into(),
                subjects: vec![RESULT_SUBJECTS.into()],
                duplicate_window: dedup,
                max_age: WEEK,
                num_replicas: config.nats_replicas,
                ..Default::default()
            },
        )
        .await?;
        Ok(Nats { client, js })
    }

    /// Publishing again is harmless, so a publish that fails while the
    /// result stream elects a new leader is repeated.
    pub async fn publish_result(&self, result: &RequestResult) -> Result<(), jetstream::context::PublishError> {
        self.publish_once(result_subject(&result.request_id), result_msg_id(&result.request_id), result).await
    }

    /// Publishes `value` on a JetStream `subject` under `msg_id`, repeated
    /// across a leader election (the stream keeps one copy per id).
    pub async fn publish_once<T: serde::Serialize + ?Sized>(&self, subject: String, msg_id: String, value: &T) -> Result<(), jetstream::context::PublishError> {
        let payload: bytes::Bytes = serde_json::to_vec(value).expect("serialises").into();
        retrying("publish", || async {
            let publish = jetstream::message::PublishMessage::build().payload(payload.clone()).message_id(msg_id.as_str());
            self.js.send_publish(subject.clone(), publish).await?.await?;
            Ok(())
        })
        .await
    }
}

/// How many times a registry or JetStream call is tried, backing off from
/// 100 ms to 2 s: about 15 s in all, longer than a JetStream stream or
/// bucket takes to elect a new leader after losing a server (or a Consul
/// cluster its leader).
const TRIES: u32 = 10;

/// Whether trying a failed call again can help.
pub trait Transient {
    /// True for outages (a server down, a leader election, a timeout);
    /// false for refusals (permissions, ACLs, limits) that a retry would
    /// only repeat.
    fn transient(&self) -> bool;
}

impl Transient for jetstream::context::PublishError {
    fn transient(&self) -> bool {
        use jetstream::context::PublishErrorKind as Kind;
        // StreamNotFound included: "no responders" while a stream elects
        // its leader reads as that.
        !matches!(self.kind(), Kind::MaxPayloadExceeded | Kind::WrongLastMessageId | Kind::WrongLastSequence)
    }
}

/// Runs a call again while it fails with a transient error.
pub async fn retrying<T, E: Display + Transient, F, Fut>(what: &str, mut call: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut delay = Duration::from_millis(100);
    let mut tried = 0;
    loop {
        match call().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                tried += 1;
                if tried >= TRIES || !e.transient() {
                    return Err(e);
                }
                tracing::warn!(error = %e, tried, "cannot {what}; trying again");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

async fn ensure_stream(js: &jetstream::Context, what: &'static str, config: stream::Config) -> Result<(), NatsError> {
    js.get_or_create_stream(config).await.map(|_| ()).map_err(|e| NatsError::Setup { what, detail: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::RegistryError;
    use std::sync::atomic::Ordering;

    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_not_retried_an_outage_is() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let refused = retrying("read", || async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>(RegistryError::Refused { op: "get", bucket: "wallets", status: 403, detail: "Permission denied".into() })
        })
        .await;
        assert!(refused.is_err());
        assert_eq!(calls.swap(0, Ordering::Relaxed), 1, "an ACL refusal is tried once");
        let outage = retrying("read", || async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>(RegistryError::Unavailable { op: "get", bucket: "wallets", detail: "connection refused".into() })
        })
        .await;
        assert!(outage.is_err());
        assert_eq!(calls.load(Ordering::Relaxed), TRIES, "an outage is tried again");
    }
}
