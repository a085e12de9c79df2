//! The registry on Consul (HTTP API v1): keys `<prefix>/<folder>/<key>`,
//! fencing by check-and-set on `ModifyIndex` (`?cas=`, 0 creates), readiness
//! held by a session with a TTL and `Behavior=delete` (the key goes when the
//! node stops renewing), and watches by blocking queries with a bounded
//! wait. Semantics as documented at developer.hashicorp.com/consul/api-docs
//! (`kv`, `session`, and "Blocking Queries").

use super::agent::{Agent, Answer};
use super::{Bucket, Change, Entry, RecordWatch, RegistryError, WatchGuard};
use base64::Engine;
use bytes::Bytes;
use conclave_proto::NodeId;
use futures::stream::BoxStream;
use futures::StreamExt;
use hyper::{Method, StatusCode};
use serde::Deserialize;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Consul refuses session TTLs under 10 s.
const MIN_SESSION_TTL: Duration = Duration::from_secs(10);

/// The `[consul]` section of the host configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsulConfig {
    /// The agent: `http://127.0.0.1:8500` or `https://host:8501`.
    pub address: String,
    /// File holding the ACL token (sent as `X-Consul-Token`).
    pub token_file: Option<PathBuf>,
    /// Folder of every Conclave key.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// CA certificate(s) of the agent (https only).
    pub ca_file: Option<PathBuf>,
    /// Client certificate, when the agent verifies incoming TLS.
    pub cert_file: Option<PathBuf>,
    /// Its private key.
    pub key_file: Option<PathBuf>,
    /// Longest a blocking query waits for a change (seconds).
    #[serde(default = "default_wait_s")]
    pub wait_s: u64,
}

fn default_prefix() -> String {
    "conclave".into()
}

fn default_wait_s() -> u64 {
    15
}

impl ConsulConfig {
    /// Checks what can be checked without the agent.
    pub fn validate(&self) -> Result<(), String> {
        let prefix_ok = !self.prefix.is_empty() && self.prefix.split('/').all(|part| !part.is_empty() && part.chars().all(key_char));
        if !prefix_ok {
            return Err(format!("prefix {:?}: folders of letters, digits, '-', '_' and '.', separated by '/'", self.prefix));
        }
        if !(1..=300).contains(&self.wait_s) {
            return Err("wait_s must be 1 to 300 (Consul caps a blocking query at 10 minutes)".into());
        }
        Ok(())
    }
}

/// Why the Consul backend cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConsulError {
    /// The address is not `http(s)://host[:port]`.
    #[error("consul address {0:?} is not http(s)://host[:port]")]
    Address(String),
    /// The ACL token file cannot be used.
    #[error("consul token file {path}: {source}")]
    Token {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TLS settings cannot be used.
    #[error("consul TLS: {0}")]
    Tls(String),
    /// A call failed before an answer arrived.
    #[error("consul {what}: {source}")]
    Call {
        /// The call.
        what: String,
        /// Why.
        #[source]
        source: crate::http_client::HttpError,
    },
}

fn key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// One entry of a KV answer (fields Conclave reads).
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KvPair {
    key: String,
    value: Option<String>,
    modify_index: u64,
    /// The session holding the key, if any.
    session: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreatedSession {
    #[serde(rename = "ID")]
    id: String,
}

/// The backend: the agent, the prefix, and this node's readiness session.
pub struct ConsulKv {
    agent: Arc<Agent>,
    prefix: String,
    wait: Duration,
    session_ttl: Duration,
    session: Mutex<Option<String>>,
}

impl ConsulKv {
    pub(super) fn open(config: &ConsulConfig, ready_ttl: Duration) -> Result<ConsulKv, ConsulError> {
        Ok(ConsulKv {
            agent: Arc::new(Agent::new(config)?),
            prefix: config.prefix.clone(),
            wait: Duration::from_secs(config.wait_s),
            session_ttl: ready_ttl.max(MIN_SESSION_TTL),
            session: Mutex::default(),
        })
    }

    fn path(&self, bucket: Bucket, key: &str) -> Result<String, RegistryError> {
        // Keys are node, wallet and request ids (already restricted to
        // these characters); anything else would not round-trip in a URL.
        if key.is_empty() || !key.chars().all(key_char) {
            return Err(RegistryError::Unavailable {
                op: "name",
                bucket: bucket.name(),
                detail: format!("key {key:?} has characters Consul keys here may not"),
            });
        }
        Ok(format!("/v1/kv/{}/{}/{key}", self.prefix, bucket.folder()))
    }

    pub(super) async fn list(&self, bucket: Bucket) -> Result<Vec<(String, Bytes)>, RegistryError> {
        let folder = format!("{}/{}/", self.prefix, bucket.folder());
        let answer = self.call(Method::GET, &format!("/v1/kv/{folder}?recurse"), Bytes::new(), bucket, "list").await?;
        let pairs = match answer.status {
            StatusCode::OK => decode_pairs(&answer.body).map_err(|detail| RegistryError::Unavailable { op: "list", bucket: bucket.name(), detail })?,
            StatusCode::NOT_FOUND => Vec::new(),
            status => return Err(refused("list", bucket, status, &answer.body)),
        };
        Ok(pairs.into_iter().filter_map(|(key, value, _)| Some((key.strip_prefix(&folder)?.to_owned(), value))).collect())
    }

    pub(super) async fn get(&self, bucket: Bucket, key: &str) -> Result<Option<Entry>, RegistryError> {
        let path = self.path(bucket, key)?;
        let answer = self.call(Method::GET, &path, Bytes::new(), bucket, "get").await?;
        match answer.status {
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK => {
                let pairs = decode_pairs(&answer.body).map_err(|detail| RegistryError::Unavailable { op: "get", bucket: bucket.name(), detail })?;
                let wanted = format!("{}/{}/{key}", self.prefix, bucket.folder());
                Ok(pairs.into_iter().find(|(k, _, _)| *k == wanted).map(|(_, value, revision)| Entry { value, revision }))
            }
            status => Err(refused("get", bucket, status, &answer.body)),
        }
    }

    pub(super) async fn put(&self, bucket: Bucket, key: &str, value: Bytes) -> Result<(), RegistryError> {
        let path = self.path(bucket, key)?;
        self.write(bucket, "put", &path, value, key).await
    }

    pub(super) async fn delete(&self, bucket: Bucket, key: &str) -> Result<(), RegistryError> {
        let path = self.path(bucket, key)?;
        self.write_with(Method::DELETE, bucket, "delete", &path, Bytes::new(), key).await
    }

    /// `?cas=0` writes only a key that does not exist; `?cas=N` only a key
    /// whose `ModifyIndex` is still N.
    pub(super) async fn update(&self, bucket: Bucket, key: &str, value: Bytes, revision: u64) -> Result<(), RegistryError> {
        let path = format!("{}?cas={revision}", self.path(bucket, key)?);
        self.write(bucket, "check-and-set", &path, value, key).await
    }

    pub(super) async fn heartbeat(&self, node: &NodeId, value: Bytes) -> Result<(), RegistryError> {
        let session = self.session(node).await?;
        let path = format!("{}?acquire={session}", self.path(Bucket::Ready, node.as_str())?);
        match self.write(Bucket::Ready, "acquire", &path, value.clone(), node.as_str()).await {
            Err(RegistryError::Conflict { .. }) => {
                // The key is held by this node's previous session: the
                // process before a restart, whose session lives until its
                // TTL (10 s or more). Only this node writes its ready key,
                // so that session is ours to end; then the key is free.
                self.end_previous_session(node, &session).await?;
                self.write(Bucket::Ready, "acquire", &path, value, node.as_str()).await
            }
            other => other,
        }
    }

    async fn end_previous_session(&self, node: &NodeId, current: &str) -> Result<(), RegistryError> {
        let path = self.path(Bucket::Ready, node.as_str())?;
        let answer = self.call(Method::GET, &path, Bytes::new(), Bucket::Ready, "read the holder").await?;
        let holders: Vec<KvPair> = match answer.status {
            StatusCode::OK => serde_json::from_slice(&answer.body).map_err(|e| RegistryError::Unavailable {
                op: "read the holder",
                bucket: Bucket::Ready.name(),
                detail: e.to_string(),
            })?,
            _ => Vec::new(),
        };
        for previous in holders.into_iter().filter_map(|p| p.session).filter(|s| s != current) {
            if previous.is_empty() || !previous.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                continue;
            }
            tracing::info!(session = %previous, "ending this node's previous readiness session");
            let answer = self.call(Method::PUT, &format!("/v1/session/destroy/{previous}"), Bytes::new(), Bucket::Ready, "end a session").await?;
            if answer.status != StatusCode::OK {
                return Err(refused("end a session", Bucket::Ready, answer.status, &answer.body));
            }
        }
        Ok(())
    }

    /// Renews this node's session, or creates one if it expired (the node
    /// was cut off longer than its TTL) or never existed.
    async fn session(&self, node: &NodeId) -> Result<String, RegistryError> {
        let current = self.session.lock().expect("session lock").clone();
        if let Some(id) = current {
            let answer = self.call(Method::PUT, &format!("/v1/session/renew/{id}"), Bytes::new(), Bucket::Ready, "renew").await?;
            match answer.status {
                StatusCode::OK => return Ok(id),
                StatusCode::NOT_FOUND => {
                    tracing::warn!(session = %id, "readiness session expired; creating another")
                }
                status => return Err(refused("renew", Bucket::Ready, status, &answer.body)),
            }
        }
        // No health checks: the session lives exactly as long as this host
        // renews it. No lock delay: a restarted node is ready at once.
        let body = serde_json::json!({
            "Name": format!("conclave-ready-{node}"),
            "TTL": format!("{}s", self.session_ttl.as_secs()),
            "Behavior": "delete",
            "LockDelay": "0s",
            "NodeChecks": [],
        });
        let answer = self.call(Method::PUT, "/v1/session/create", body.to_string().into(), Bucket::Ready, "create a session").await?;
        if answer.status != StatusCode::OK {
            return Err(refused("create a session", Bucket::Ready, answer.status, &answer.body));
        }
        let created: CreatedSession = serde_json::from_slice(&answer.body).map_err(|e| RegistryError::Unavailable {
            op: "create a session",
            bucket: Bucket::Ready.name(),
            detail: format!("unreadable answer: {e}"),
        })?;
        if created.id.is_empty() || !created.id.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            return Err(RegistryError::Unavailable {
                op: "create a session",
                bucket: Bucket::Ready.name(),
                detail: "the agent answered a malformed session id".into(),
            });
        }
        *self.session.lock().expect("session lock") = Some(created.id.clone());
        Ok(created.id)
    }

    async fn write(&self, bucket: Bucket, op: &'static str, path: &str, value: Bytes, key: &str) -> Result<(), RegistryError> {
        self.write_with(Method::PUT, bucket, op, path, value, key).await
    }

    /// A write (PUT or DELETE), which the agent answers `true` or `false`.
    async fn write_with(&self, method: Method, bucket: Bucket, op: &'static str, path: &str, value: Bytes, key: &str) -> Result<(), RegistryError> {
        let answer = self.call(method, path, value, bucket, op).await?;
        if answer.status != StatusCode::OK {
            return Err(refused(op, bucket, answer.status, &answer.body));
        }
        match answer.body.trim_ascii() {
            b"true" => Ok(()),
            b"false" => Err(RegistryError::Conflict { bucket: bucket.name(), key: key.into() }),
            _ => Err(RegistryError::Unavailable { op, bucket: bucket.name(), detail: "the agent answered neither true nor false".into() }),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Bytes, bucket: Bucket, op: &'static str) -> Result<Answer, RegistryError> {
        self.agent.call(method, path, body, Duration::ZERO).await.map_err(|e| RegistryError::Unavailable { op, bucket: bucket.name(), detail: e.to_string() })
    }

    /// A watch of the keys of `bucket` that start with `start`.
    fn new_watch(&self, bucket: Bucket, start: &str) -> Watch {
        let folder = format!("{}/{}/", self.prefix, bucket.folder());
        Watch { agent: self.agent.clone(), bucket, wait: self.wait, folder, start: start.to_owned(), index: 0, known: HashMap::new(), pending: VecDeque::new() }
    }

    /// Every key of `bucket`, then every change, by blocking queries; ends
    /// when a query fails.
    pub(super) fn watch(&self, bucket: Bucket) -> BoxStream<'static, Change> {
        futures::stream::unfold(self.new_watch(bucket, ""), |mut watch| async move {
            loop {
                if let Some(change) = watch.pending.pop_front() {
                    return Some((change, watch));
                }
                if let Err(e) = watch.next_answer().await {
                    tracing::warn!(error = %e, "consul watch broke");
                    return None;
                }
            }
        })
        .boxed()
    }

    /// Reads the request's records once before returning (the baseline
    /// against which later answers are changes; records found there count
    /// as one change, so that a host that takes a request after another
    /// wrote its record wakes at once), then follows them.
    pub(super) async fn watch_request(&self, id: &str) -> RecordWatch {
        let mut watch = self.new_watch(Bucket::Sessions, id);
        if let Err(e) = watch.next_answer().await {
            // Then the first answer the task gets counts as a change.
            tracing::warn!(error = %e, "cannot read a request's records yet");
        }
        let found = !watch.pending.is_empty();
        watch.pending.clear();
        let notify = Arc::new(tokio::sync::Notify::new());
        if found {
            notify.notify_one();
        }
        let wake = notify.clone();
        let task = tokio::spawn(async move {
            loop {
                while watch.next_answer().await.is_ok() {
                    if !watch.pending.is_empty() {
                        watch.pending.clear();
                        wake.notify_one();
                    }
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                // Start over knowing nothing: the first answer wakes the
                // follower, which re-reads (what changed meanwhile is lost).
                watch.index = 0;
                watch.known.clear();
            }
        });
        RecordWatch { notify, seen: None, guard: WatchGuard::Own(task.abort_handle()) }
    }
}

/// A blocking-query watch of the keys under `folder` + `start`.
struct Watch {
    agent: Arc<Agent>,
    bucket: Bucket,
    wait: Duration,
    folder: String,
    start: String,
    /// The `X-Consul-Index` of the last answer.
    index: u64,
    /// Key (within the folder) -> ModifyIndex seen.
    known: HashMap<String, u64>,
    pending: VecDeque<Change>,
}

impl Watch {
    /// Waits for the next answer and queues what changed since the last.
    async fn next_answer(&mut self) -> Result<(), RegistryError> {
        let bucket = self.bucket;
        let unavailable = |detail: String| RegistryError::Unavailable { op: "watch", bucket: bucket.name(), detail };
        let path = format!("/v1/kv/{}{}?recurse&index={}&wait={}s", self.folder, self.start, self.index, self.wait.as_secs());
        let answer = self.agent.call(Method::GET, &path, Bytes::new(), self.wait).await.map_err(|e| unavailable(e.to_string()))?;
        let pairs = match answer.status {
            StatusCode::OK => decode_pairs(&answer.body).map_err(unavailable)?,
            StatusCode::NOT_FOUND => Vec::new(),
            status => return Err(refused("watch", bucket, status, &answer.body)),
        };
        // An index that goes backwards (a restored snapshot, a new leader)
        // restarts from scratch; one under 1 is never waited on.
        let index = answer.index.ok_or_else(|| unavailable("the agent sent no X-Consul-Index".into()))?;
        self.index = if index < self.index { 0 } else { index.max(1) };
        let mut seen = HashMap::with_capacity(pairs.len());
        for (key, value, revision) in pairs {
            let Some(key) = key.strip_prefix(&self.folder) else {
                continue;
            };
            if self.known.get(key) != Some(&revision) {
                self.pending.push_back(Change::Put { key: key.to_owned(), value });
            }
            seen.insert(key.to_owned(), revision);
        }
        for key in self.known.keys().filter(|k| !seen.contains_key(*k)) {
            self.pending.push_back(Change::Delete { key: key.clone() });
        }
        self.known = seen;
        Ok(())
    }
}

/// Decodes a KV answer: (full key, value, ModifyIndex) per pair.
fn decode_pairs(body: &[u8]) -> Result<Vec<(String, Bytes, u64)>, String> {
    let pairs: Vec<KvPair> = serde_json::from_slice(body).map_err(|e| format!("unreadable KV answer: {e}"))?;
    pairs
        .into_iter()
        .map(|p| {
            let value = match p.value {
                Some(v) => base64::engine::general_purpose::STANDARD.decode(v).map_err(|e| format!("value of {}: {e}", p.key))?,
                None => Vec::new(),
            };
            Ok((p.key, value.into(), p.modify_index))
        })
        .collect()
}

/// An answer other than the one expected: an ACL refusal or a request the
/// agent does not serve is final, anything else (5xx, 429) may pass.
fn refused(op: &'static str, bucket: Bucket, status: StatusCode, body: &[u8]) -> RegistryError {
    let said: String = String::from_utf8_lossy(&body[..body.len().min(200)]).chars().filter(|c| !c.is_control()).collect();
    if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
        return RegistryError::Refused { op, bucket: bucket.name(), status: status.as_u16(), detail: said };
    }
    RegistryError::Unavailable { op, bucket: bucket.name(), detail: format!("the agent answered {status}: {said}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_acl_refusal_is_final_a_server_error_is_not() {
        use crate::nats::Transient;
        let denied = refused("get", Bucket::Wallets, StatusCode::FORBIDDEN, b"Permission denied: token lacks key:read");
        assert!(matches!(denied, RegistryError::Refused { status: 403, .. }), "{denied}");
        assert!(!denied.transient());
        for status in [StatusCode::INTERNAL_SERVER_ERROR, StatusCode::TOO_MANY_REQUESTS, StatusCode::SERVICE_UNAVAILABLE] {
            let e = refused("get", Bucket::Wallets, status, b"No cluster leader");
            assert!(e.transient(), "{status}: {e}");
        }
    }

    #[test]
    fn kv_answers_decode_as_consul_documents_them() {
        let body = br#"[{"LockIndex":0,"Key":"conclave/ready/node-1","Flags":0,"Value":"aGk=","CreateIndex":100,"ModifyIndex":200},
                        {"LockIndex":0,"Key":"conclave/ready/node-2","Flags":0,"Value":null,"CreateIndex":3,"ModifyIndex":4}]"#;
        let pairs = decode_pairs(body).unwrap();
        assert_eq!(pairs[0], ("conclave/ready/node-1".into(), Bytes::from_static(b"hi"), 200));
        assert_eq!(pairs[1].1, Bytes::new());
        assert!(decode_pairs(b"[{\"Key\":\"k\",\"Value\":\"!!\",\"ModifyIndex\":1}]").is_err());
        assert!(decode_pairs(b"{}").is_err());
    }

    #[test]
    fn prefixes_are_checked() {
        let config = |prefix: &str| ConsulConfig {
            address: "http://127.0.0.1:8500".into(),
            token_file: None,
            prefix: prefix.into(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            wait_s: 15,
        };
        assert!(config("conclave").validate().is_ok());
        assert!(config("custody/conclave-prod").validate().is_ok());
        for bad in ["", "/conclave", "conclave/", "a//b", "con clave", "a?b"] {
            assert!(config(bad).validate().is_err(), "{bad:?}");
        }
    }
}
