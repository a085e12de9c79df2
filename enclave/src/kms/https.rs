//! The enclave's HTTPS client for KMS: TLS from inside the enclave through
//! a byte forwarder (AWS's vsock-proxy on the parent), HTTP/1.1, SigV4.

use super::sigv4::{self, Credentials, Scope};
use super::{KmsError, MAX_ANSWER};
use bytes::Bytes;
use conclave_proto::link::LinkAddr;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls;

/// How long one KMS call may take, connection included.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Where KMS is and how it is reached.
pub struct Endpoint {
    region: String,
    host: String,
    proxy: LinkAddr,
    tls: tokio_rustls::TlsConnector,
}

/// The roots KMS's certificates chain to: Amazon Trust Services' (and the
/// Starfield root that cross-signs them). Any other public CA could
/// otherwise certify a KMS impostor on the host's side of the forwarder.
fn amazon_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    let amazon = |subject: &[u8]| subject.windows(6).any(|w| w == b"Amazon") || subject.windows(18).any(|w| w == b"Starfield Services");
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().filter(|anchor| amazon(anchor.subject.as_ref())).cloned());
    roots
}

impl Endpoint {
    /// KMS in `region`, reached through `proxy`, trusting `ca_file`'s
    /// certificates instead of Amazon's roots if given (a private endpoint,
    /// or a test).
    pub fn new(region: &str, proxy: LinkAddr, ca_file: Option<&Path>) -> Result<Endpoint, String> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::CertificateDer;
        let roots = match ca_file {
            None => amazon_roots(),
            Some(path) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))? {
                    roots.add(cert.map_err(|e| format!("{}: {e}", path.display()))?).map_err(|e| format!("{}: {e}", path.display()))?;
                }
                roots
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Endpoint { region: region.to_string(), host: format!("kms.{region}.amazonaws.com"), proxy, tls: tokio_rustls::TlsConnector::from(Arc::new(config)) })
    }

    /// POSTs a signed call; returns KMS's status and body.
    pub(super) async fn post(&self, credentials: &Credentials, operation: &str, body: Vec<u8>) -> Result<(u16, Bytes), KmsError> {
        let fail = |detail: String| KmsError::Transport { endpoint: format!("{} via {}", self.host, self.proxy), detail };
        match tokio::time::timeout(CALL_TIMEOUT, self.exchange(credentials, operation, body)).await {
            Ok(answer) => answer.map_err(fail),
            Err(_) => Err(fail(format!("no answer within {CALL_TIMEOUT:?}"))),
        }
    }

    async fn exchange(&self, credentials: &Credentials, operation: &str, body: Vec<u8>) -> Result<(u16, Bytes), String> {
        let stream = conclave_proto::transport::connect(&self.proxy).await.map_err(|e| format!("connect: {e}"))?;
        let name = rustls::pki_types::ServerName::try_from(self.host.clone()).map_err(|e| e.to_string())?;
        let tls = self.tls.connect(name, stream).await.map_err(|e| format!("TLS: {e}"))?;
        let target = format!("TrentService.{operation}");
        let headers = [("host", self.host.as_str()), ("content-type", "application/x-amz-json-1.1"), ("x-amz-target", target.as_str())];
        let now = time::OffsetDateTime::now_utc();
        let amz_date = format!("{:04}{:02}{:02}T{:02}{:02}{:02}Z", now.year(), u8::from(now.month()), now.day(), now.hour(), now.minute(), now.second());
        let signed = sigv4::sign(credentials, &Scope { region: &self.region, service: "kms" }, "POST", &headers, &body, &amz_date);
        let mut request = hyper::Request::builder().method("POST").uri("/");
        for (name, value) in headers.iter().map(|(n, v)| (n.to_string(), v.to_string())).chain(signed) {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(Bytes::from(body))).map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
        // The connection task ends when the answer is read or dropped.
        tokio::spawn(connection);
        let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_ANSWER).collect().await.map_err(|e| format!("reading the answer: {e}"))?.to_bytes();
        Ok((status, body))
    }
}
