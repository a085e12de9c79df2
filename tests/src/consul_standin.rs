//! A STAND-IN for a Consul agent, for tests only: a real Consul server
//! cannot be obtained on these machines. It serves the part of Consul's
//! HTTP API v1 that Conclave's registry uses, with the semantics of
//! Consul's API documentation (developer.hashicorp.com/consul/api-docs):
//!
//! - `kv`: GET (one key, or `?recurse` for a prefix; 404 when nothing
//!   matches), PUT with `?cas=` (0 = only if absent, N = only if
//!   `ModifyIndex` is N) and `?acquire=<session>`, DELETE; answers `true` or
//!   `false` for writes; `X-Consul-Index` on reads.
//! - blocking queries: `?index=N&wait=Ds` holds a read until the index of
//!   what it reads passes N or the wait (default 5 min, at most 10 min) ends.
//! - `session`: create (TTL 10 s to 24 h, `Behavior` release or delete,
//!   `LockDelay`), renew (404 once invalidated), destroy; a session not
//!   renewed within its TTL is invalidated, and with `Behavior=delete` the
//!   keys it holds are deleted.
//! - ACL: with a token configured, any call without it is refused with 403.
//!
//! Not served: everything else (catalog, health, transactions, lock delay
//! enforcement, consistency modes, datacenters). Tests that use it must
//! also pass unchanged against a real agent (`CONSUL_HTTP_ADDR`).

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Consul's limit on a KV value.
const MAX_VALUE: usize = 512 * 1024;
const MIN_TTL: Duration = Duration::from_secs(10);
const MAX_TTL: Duration = Duration::from_secs(86_400);
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(600);

struct Pair {
    value: Bytes,
    create_index: u64,
    modify_index: u64,
    lock_index: u64,
    session: Option<String>,
}

struct Session {
    ttl: Duration,
    delete: bool,
    expires: Instant,
}

#[derive(Default)]
struct Store {
    /// The last index handed out (Consul's Raft index).
    index: u64,
    kv: BTreeMap<String, Pair>,
    /// Deleted keys and the index of their deletion, so that a blocking
    /// query on a prefix wakes when a key under it goes.
    tombstones: BTreeMap<String, u64>,
    sessions: HashMap<String, Session>,
}

impl Store {
    fn bump(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    /// The index a read of `key` (or of the prefix, with `recurse`) reports
    /// and waits on: the newest change among what it reads; the store's
    /// index when nothing matches (as Consul reports the table's index).
    fn read_index(&self, key: &str, recurse: bool) -> u64 {
        let latest = if recurse {
            let live = self.kv.range(key.to_owned()..).take_while(|(k, _)| k.starts_with(key)).map(|(_, p)| p.modify_index);
            let gone = self.tombstones.range(key.to_owned()..).take_while(|(k, _)| k.starts_with(key)).map(|(_, i)| *i);
            live.chain(gone).max()
        } else {
            self.kv.get(key).map(|p| p.modify_index).or_else(|| self.tombstones.get(key).copied())
        };
        latest.unwrap_or(self.index).max(1)
    }

    fn delete(&mut self, key: &str) {
        if self.kv.remove(key).is_some() {
            let index = self.bump();
            self.tombstones.insert(key.to_owned(), index);
        }
    }

    fn invalidate(&mut self, id: &str) {
        let Some(session) = self.sessions.remove(id) else {
            return;
        };
        let held: Vec<String> = self.kv.iter().filter(|(_, p)| p.session.as_deref() == Some(id)).map(|(k, _)| k.clone()).collect();
        for key in held {
            if session.delete {
                self.delete(&key);
            } else {
                let index = self.bump();
                let pair = self.kv.get_mut(&key).expect("held key");
                pair.session = None;
                pair.modify_index = index;
            }
        }
    }

    fn expire(&mut self, now: Instant) -> bool {
        let expired: Vec<String> = self.sessions.iter().filter(|(_, s)| s.expires <= now).map(|(id, _)| id.clone()).collect();
        for id in &expired {
            self.invalidate(id);
        }
        !expired.is_empty()
    }
}

struct Shared {
    store: Mutex<Store>,
    /// Carries the store's index to blocked readers.
    changed: watch::Sender<u64>,
    token: Option<String>,
}

impl Shared {
    fn publish(&self, store: &Store) {
        self.changed.send_replace(store.index);
    }
}

/// A running stand-in on 127.0.0.1; stops when dropped.
pub struct ConsulStandIn {
    port: u16,
    secure: bool,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl ConsulStandIn {
    /// Starts a stand-in that requires `token` (if any) on every call.
    pub async fn start(token: Option<String>) -> ConsulStandIn {
        Self::serve(token, None).await
    }

    /// The same over TLS (`ConsulStandIn::address` then says https), with
    /// the certificate and key of `ca`'s `server`, and requiring client
    /// certificates of `ca` if `verify_clients` (an agent with
    /// `verify_incoming`).
    pub async fn start_tls(token: Option<String>, ca: &crate::pki::TestCa, verify_clients: bool) -> ConsulStandIn {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        use tokio_rustls::rustls;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca.file("server.pem")).unwrap().map(|c| c.unwrap()).collect();
        let key = PrivateKeyDer::from_pem_file(ca.file("server.key")).unwrap();
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
        let config = if verify_clients {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(CertificateDer::from_pem_file(ca.file("ca.pem")).unwrap()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider).build().unwrap();
            builder.with_client_cert_verifier(verifier).with_single_cert(chain, key).unwrap()
        } else {
            builder.with_no_client_auth().with_single_cert(chain, key).unwrap()
        };
        Self::serve(token, Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)))).await
    }

    async fn serve(token: Option<String>, tls: Option<tokio_rustls::TlsAcceptor>) -> ConsulStandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local addr").port();
        // A Consul cluster's index is past 1 before anyone can write: the
        // first write must read as a change to a reader of an empty folder.
        let store = Store { index: 1, ..Store::default() };
        let shared = Arc::new(Shared { store: Mutex::new(store), changed: watch::channel(1).0, token });
        let reaper = tokio::spawn(expire_sessions(shared.clone()));
        let secure = tls.is_some();
        let server = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (shared, tls) = (shared.clone(), tls.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let shared = shared.clone();
                        async move { Ok::<_, std::convert::Infallible>(handle(&shared, request).await) }
                    });
                    let http = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(tcp).await {
                                let _ = http.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                        None => {
                            let _ = http.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        ConsulStandIn { port, secure, tasks: vec![reaper, server] }
    }

    /// `http://127.0.0.1:<port>` (https with TLS).
    pub fn address(&self) -> String {
        format!("{}://127.0.0.1:{}", if self.secure { "https" } else { "http" }, self.port)
    }
}

impl Drop for ConsulStandIn {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Invalidates sessions whose TTL passed without renewal.
async fn expire_sessions(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tick.tick().await;
        let mut store = shared.store.lock().expect("store lock");
        if store.expire(Instant::now()) {
            shared.publish(&store);
        }
    }
}

fn answer(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder().status(status).body(Full::new(body.into())).expect("response")
}

fn with_index(mut response: Response<Full<Bytes>>, index: u64) -> Response<Full<Bytes>> {
    response.headers_mut().insert("X-Consul-Index", index.into());
    response
}

async fn handle(shared: &Shared, request: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    if let Some(token) = &shared.token {
        let given = request.headers().get("X-Consul-Token").and_then(|v| v.to_str().ok());
        if given != Some(token.as_str()) {
            return answer(StatusCode::FORBIDDEN, "Permission denied");
        }
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query: HashMap<String, String> = request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (p.to_owned(), String::new()),
        })
        .collect();
    let body = match Limited::new(request.into_body(), MAX_VALUE).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return answer(StatusCode::PAYLOAD_TOO_LARGE, "Value exceeds 524288 byte limit"),
    };
    if let Some(key) = path.strip_prefix("/v1/kv/") {
        return match method {
            Method::GET => kv_get(shared, key, &query).await,
            Method::PUT => kv_put(shared, key, &query, body),
            Method::DELETE => {
                let mut store = shared.store.lock().expect("store lock");
                store.delete(key);
                shared.publish(&store);
                answer(StatusCode::OK, "true")
            }
            _ => answer(StatusCode::METHOD_NOT_ALLOWED, ""),
        };
    }
    match (method, path.as_str()) {
        (Method::PUT, "/v1/session/create") => session_create(shared, &body),
        (Method::PUT, p) if p.starts_with("/v1/session/renew/") => {
            let id = &p["/v1/session/renew/".len()..];
            let mut store = shared.store.lock().expect("store lock");
            match store.sessions.get_mut(id) {
                Some(session) => {
                    session.expires = Instant::now() + session.ttl;
                    let body = serde_json::json!([{ "ID": id, "TTL": format!("{}s", session.ttl.as_secs()) }]);
                    answer(StatusCode::OK, body.to_string())
                }
                None => answer(StatusCode::NOT_FOUND, format!("Session id '{id}' not found")),
            }
        }
        (Method::PUT, p) if p.starts_with("/v1/session/destroy/") => {
            let mut store = shared.store.lock().expect("store lock");
            store.invalidate(&p["/v1/session/destroy/".len()..]);
            shared.publish(&store);
            answer(StatusCode::OK, "true")
        }
        _ => answer(StatusCode::NOT_FOUND, "not served by the Consul stand-in"),
    }
}

fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = number.parse().ok()?;
    match unit {
        "s" => Some(Duration::from_secs(n)),
        "ms" => Some(Duration::from_millis(n)),
        "m" => Some(Duration::from_secs(60 * n)),
        "h" => Some(Duration::from_secs(3600 * n)),
        _ => None,
    }
}

async fn kv_get(shared: &Shared, key: &str, query: &HashMap<String, String>) -> Response<Full<Bytes>> {
    let recurse = query.contains_key("recurse");
    let mut changed = shared.changed.subscribe();
    if let Some(after) = query.get("index").and_then(|i| i.parse::<u64>().ok()).filter(|i| *i > 0) {
        let wait = query.get("wait").and_then(|w| parse_duration(w)).unwrap_or(DEFAULT_WAIT).min(MAX_WAIT);
        let until = tokio::time::Instant::now() + wait;
        loop {
            if shared.store.lock().expect("store lock").read_index(key, recurse) > after {
                break;
            }
            if tokio::time::timeout_at(until, changed.changed()).await.is_err() {
                break;
            }
        }
    }
    let store = shared.store.lock().expect("store lock");
    let index = store.read_index(key, recurse);
    let encode = |k: &String, p: &Pair| {
        serde_json::json!({
            "Key": k,
            "Value": (!p.value.is_empty()).then(|| base64::engine::general_purpose::STANDARD.encode(&p.value)),
            "CreateIndex": p.create_index,
            "ModifyIndex": p.modify_index,
            "LockIndex": p.lock_index,
            "Flags": 0,
            "Session": p.session,
        })
    };
    let pairs: Vec<serde_json::Value> = if recurse {
        store.kv.range(key.to_owned()..).take_while(|(k, _)| k.starts_with(key)).map(|(k, p)| encode(k, p)).collect()
    } else {
        store.kv.get_key_value(key).map(|(k, p)| encode(k, p)).into_iter().collect()
    };
    if pairs.is_empty() {
        return with_index(answer(StatusCode::NOT_FOUND, ""), index);
    }
    with_index(answer(StatusCode::OK, serde_json::Value::Array(pairs).to_string()), index)
}

fn kv_put(shared: &Shared, key: &str, query: &HashMap<String, String>, value: Bytes) -> Response<Full<Bytes>> {
    let mut store = shared.store.lock().expect("store lock");
    if let Some(cas) = query.get("cas") {
        let Ok(cas) = cas.parse::<u64>() else {
            return answer(StatusCode::BAD_REQUEST, "Invalid cas index");
        };
        let current = store.kv.get(key).map(|p| p.modify_index).unwrap_or(0);
        if current != cas {
            return answer(StatusCode::OK, "false");
        }
    }
    let acquire = query.get("acquire").cloned();
    if let Some(session) = &acquire {
        if !store.sessions.contains_key(session) {
            return answer(StatusCode::INTERNAL_SERVER_ERROR, format!("invalid session \"{session}\""));
        }
        if let Some(holder) = store.kv.get(key).and_then(|p| p.session.as_ref()) {
            if holder != session {
                return answer(StatusCode::OK, "false");
            }
        }
    }
    let index = store.bump();
    let pair = store.kv.entry(key.to_owned()).or_insert(Pair { value: Bytes::new(), create_index: index, modify_index: index, lock_index: 0, session: None });
    pair.value = value;
    pair.modify_index = index;
    if let Some(session) = acquire {
        if pair.session.as_deref() != Some(session.as_str()) {
            pair.lock_index += 1;
            pair.session = Some(session);
        }
    }
    store.tombstones.remove(key);
    shared.publish(&store);
    answer(StatusCode::OK, "true")
}

fn session_create(shared: &Shared, body: &[u8]) -> Response<Full<Bytes>> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Create {
        #[serde(rename = "TTL")]
        ttl: Option<String>,
        behavior: Option<String>,
    }
    let Ok(create) = serde_json::from_slice::<Create>(if body.is_empty() { b"{}" } else { body }) else {
        return answer(StatusCode::BAD_REQUEST, "Request decode failed");
    };
    let Some(ttl) = create.ttl.as_deref().and_then(parse_duration) else {
        // A session without a TTL lives on health checks this stand-in has not.
        return answer(StatusCode::BAD_REQUEST, "the Consul stand-in serves TTL sessions only");
    };
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        return answer(StatusCode::BAD_REQUEST, format!("Invalid Session TTL '{}', must be between [10s=24h0m0s]", create.ttl.unwrap_or_default()));
    }
    let delete = match create.behavior.as_deref() {
        None | Some("release") => false,
        Some("delete") => true,
        Some(other) => return answer(StatusCode::BAD_REQUEST, format!("Invalid Behavior setting '{other}'")),
    };
    let mut id = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
    let h = hex::encode(id);
    let id = format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32]);
    let mut store = shared.store.lock().expect("store lock");
    store.bump();
    store.sessions.insert(id.clone(), Session { ttl, delete, expires: Instant::now() + ttl });
    answer(StatusCode::OK, serde_json::json!({ "ID": id }).to_string())
}
