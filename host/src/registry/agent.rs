//! HTTP to a Consul agent: one connection per call (a blocking query holds
//! its connection for its whole wait), plain or TLS, with the ACL token.
//! Answers are untrusted input: bounded in size and time.

use super::consul::{ConsulConfig, ConsulError};
use crate::http_client::HttpError;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_rustls::rustls;

/// The most an agent's answer may carry. A folder listing of every node's
/// record is a few KiB; a request's records a few hundred bytes.
const MAX_ANSWER: usize = 4 * 1024 * 1024;

/// How long a call may take beyond its blocking wait.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// An agent's answer.
pub(super) struct Answer {
    pub status: StatusCode,
    /// `X-Consul-Index`: the index a blocking query waits past.
    pub index: Option<u64>,
    pub body: Bytes,
}

/// Where the agent is and how to talk to it.
pub(super) struct Agent {
    host: String,
    port: u16,
    tls: Option<tokio_rustls::TlsConnector>,
    token: Option<String>,
}

impl Agent {
    pub(super) fn new(config: &ConsulConfig) -> Result<Agent, ConsulError> {
        let uri: hyper::Uri = config.address.parse().map_err(|_| ConsulError::Address(config.address.clone()))?;
        let secure = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(ConsulError::Address(config.address.clone())),
        };
        if uri.path() != "/" && !uri.path().is_empty() {
            return Err(ConsulError::Address(config.address.clone()));
        }
        let host = uri.host().ok_or_else(|| ConsulError::Address(config.address.clone()))?.trim_matches(['[', ']']).to_owned();
        let port = uri.port_u16().unwrap_or(if secure { 8501 } else { 8500 });
        let tls = if secure { Some(connector(config)?) } else { None };
        let token = match &config.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConsulError::Token { path: path.clone(), source })?;
                let token = text.trim().to_owned();
                if token.is_empty() || token.contains(|c: char| c.is_control()) {
                    return Err(ConsulError::Token { path: path.clone(), source: std::io::Error::other("empty or not one line") });
                }
                Some(token)
            }
            None => None,
        };
        Ok(Agent { host, port, tls, token })
    }

    /// Sends one request; `wait` is how long the agent may hold a blocking
    /// query before answering.
    pub(super) async fn call(&self, method: Method, path_and_query: &str, body: Bytes, wait: Duration) -> Result<Answer, ConsulError> {
        let what = format!("{method} {}", path_and_query.split('?').next().unwrap_or_default());
        // Consul adds up to wait/16 of jitter to a blocking query.
        let limit = wait + wait / 16 + CALL_TIMEOUT;
        match tokio::time::timeout(limit, self.exchange(method, path_and_query, body)).await {
            Ok(answer) => answer.map_err(|source| ConsulError::Call { what, source }),
            Err(_) => Err(ConsulError::Call { what, source: HttpError::Timeout(limit) }),
        }
    }

    async fn exchange(&self, method: Method, path_and_query: &str, body: Bytes) -> Result<Answer, HttpError> {
        let addr = || format!("{}:{}", self.host, self.port);
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|source| HttpError::Connect { addr: addr(), source })?;
        tcp.set_nodelay(true).ok();
        let mut request = Request::builder().method(method).uri(path_and_query).header(hyper::header::HOST, &self.host);
        if let Some(token) = &self.token {
            request = request.header("X-Consul-Token", token);
        }
        let request = request.body(Full::new(body))?;
        let response = match &self.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone()).map_err(|e| HttpError::Tls(e.to_string()))?;
                let stream = tls.connect(name, tcp).await.map_err(|e| HttpError::Tls(e.to_string()))?;
                crate::http_client::send(TokioIo::new(stream), request).await?
            }
            None => crate::http_client::send(TokioIo::new(tcp), request).await?,
        };
        let status = response.status();
        let index = response.headers().get("X-Consul-Index").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
        let body = Limited::new(response.into_body(), MAX_ANSWER).collect().await.map_err(|e| HttpError::Body(e.to_string()))?.to_bytes();
        Ok(Answer { status, index, body })
    }
}

/// TLS to the agent: the configured CA (never the system roots: an agent's
/// certificate comes from the cluster's own CA), and a client certificate
/// when the agent verifies incoming connections.
fn connector(config: &ConsulConfig) -> Result<tokio_rustls::TlsConnector, ConsulError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let tls = |detail: String| ConsulError::Tls(detail);
    let ca = config.ca_file.as_ref().ok_or_else(|| tls("an https address needs `ca_file`".into()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).map_err(|e| tls(format!("{}: {e}", ca.display())))? {
        roots.add(cert.map_err(|e| tls(format!("{}: {e}", ca.display())))?).map_err(|e| tls(format!("{}: {e}", ca.display())))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(e.to_string()))?
        .with_root_certificates(roots);
    let client = match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_file_iter(cert).and_then(|certs| certs.collect()).map_err(|e| tls(format!("{}: {e}", cert.display())))?;
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| tls(format!("{}: {e}", key.display())))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| tls(e.to_string()))?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err(tls("`cert_file` and `key_file` go together".into())),
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(client)))
}
