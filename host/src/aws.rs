//! The instance role's temporary credentials, from the EC2 instance
//! metadata service (IMDSv2: a session token first, then the role's
//! credentials), for a nitro enclave's own KMS calls. The host holds these
//! anyway; KMS releases data keys only to an attested enclave.

use crate::http_client::HttpError;
use bytes::Bytes;
use conclave_proto::link::AwsCredentials;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::time::Duration;

/// How long one metadata request may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of an answer that is read.
const MAX_ANSWER: usize = 16 * 1024;
/// Lifetime of the IMDSv2 session token asked for; one fetch uses it.
const TOKEN_TTL_S: &str = "60";

/// Why the instance role's credentials could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum ImdsError {
    /// A call to the metadata service failed.
    #[error("IMDS {what}: {source}")]
    Call {
        /// The call (method and path).
        what: String,
        /// Why.
        #[source]
        source: HttpError,
    },
    /// The metadata service answered a call with an error status.
    #[error("IMDS {what}: HTTP {status}")]
    Status {
        /// The call (method and path).
        what: String,
        /// The status.
        status: hyper::StatusCode,
    },
    /// The instance has no IAM role (or its name is not one).
    #[error("the instance has no IAM role")]
    NoRole,
    /// An answer is not what IMDS documents.
    #[error("IMDS answer: {0}")]
    Unreadable(String),
    /// The role's credentials are not usable (`Code` other than `Success`).
    #[error("IMDS credentials for role {role}: {code}")]
    NotIssued {
        /// The role.
        role: String,
        /// IMDS's `Code`.
        code: String,
    },
}

/// Fetches the credentials of the instance's role.
pub async fn instance_credentials(imds: SocketAddr) -> Result<AwsCredentials, ImdsError> {
    let token = call(imds, Method::PUT, "/latest/api/token", ("X-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL_S)).await?;
    let token = String::from_utf8(token.to_vec()).map_err(|_| ImdsError::Unreadable("the token is not text".into()))?;
    let auth = ("X-aws-ec2-metadata-token", token.as_str());
    let roles = call(imds, Method::GET, "/latest/meta-data/iam/security-credentials/", auth).await?;
    let roles = String::from_utf8_lossy(&roles).into_owned();
    let role =
        roles.lines().next().filter(|r| !r.is_empty() && r.chars().all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c))).ok_or(ImdsError::NoRole)?;
    let body = call(imds, Method::GET, &format!("/latest/meta-data/iam/security-credentials/{role}"), auth).await?;
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct RoleCredentials {
        code: String,
        access_key_id: String,
        secret_access_key: String,
        token: Option<String>,
    }
    let c: RoleCredentials = serde_json::from_slice(&body).map_err(|e| ImdsError::Unreadable(format!("credentials: {e}")))?;
    if c.code != "Success" {
        return Err(ImdsError::NotIssued { role: role.to_owned(), code: c.code });
    }
    Ok(AwsCredentials { access_key_id: c.access_key_id, secret_access_key: c.secret_access_key, session_token: c.token })
}

async fn call(imds: SocketAddr, method: Method, path: &str, header: (&str, &str)) -> Result<Bytes, ImdsError> {
    let what = format!("{method} {path}");
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(imds).await.map_err(|source| HttpError::Connect { addr: imds.to_string(), source })?;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, imds.ip().to_string())
            .header(header.0, header.1)
            .body(Full::new(Bytes::new()))?;
        let response = crate::http_client::send(TokioIo::new(tcp), request).await?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER).collect().await.map_err(|e| HttpError::Body(e.to_string()))?.to_bytes();
        Ok::<_, HttpError>((status, body))
    };
    let (status, body) = match tokio::time::timeout(CALL_TIMEOUT, exchange).await {
        Ok(answer) => answer.map_err(|source| ImdsError::Call { what: what.clone(), source })?,
        Err(_) => return Err(ImdsError::Call { what, source: HttpError::Timeout(CALL_TIMEOUT) }),
    };
    match status.is_success() {
        true => Ok(body),
        false => Err(ImdsError::Status { what, status }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::body::Incoming;
    use hyper::service::service_fn;
    use std::sync::{Arc, Mutex};

    /// A stand-in for the EC2 metadata service (which exists only on EC2):
    /// the three IMDSv2 calls, answered as AWS documents them, refusing any
    /// call without the session token it issued.
    async fn fake_imds(code: &'static str) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                let log = log.clone();
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(
                    TokioIo::new(tcp),
                    service_fn(move |req: Request<Incoming>| {
                        let log = log.clone();
                        async move {
                            log.lock().unwrap().push(format!("{} {}", req.method(), req.uri().path()));
                            let token_ok = req.headers().get("X-aws-ec2-metadata-token").is_some_and(|t| t == "tok-1");
                            let (status, body) = match (req.method().as_str(), req.uri().path()) {
                                ("PUT", "/latest/api/token") if req.headers().contains_key("X-aws-ec2-metadata-token-ttl-seconds") => (200, "tok-1".to_string()),
                                (_, _) if !token_ok => (401, String::new()),
                                ("GET", "/latest/meta-data/iam/security-credentials/") => (200, "conclave-node-1\n".to_string()),
                                ("GET", "/latest/meta-data/iam/security-credentials/conclave-node-1") => (
                                    200,
                                    format!(r#"{{"Code":"{code}","LastUpdated":"2026-11-25T10:00:00Z","Type":"AWS-HMAC","AccessKeyId":"ASIAEXAMPLE","SecretAccessKey":"secret/EXAMPLE","Token":"session-token","Expiration":"2026-11-25T16:00:00Z"}}"#),
                                ),
                                _ => (404, String::new()),
                            };
                            Ok::<_, std::convert::Infallible>(hyper::Response::builder().status(status).body(http_body_util::Full::new(Bytes::from(body))).unwrap())
                        }
                    }),
                ));
            }
        });
        (addr, seen)
    }

    #[tokio::test]
    async fn credentials_come_from_imdsv2_with_a_session_token() {
        let (addr, seen) = fake_imds("Success").await;
        let c = instance_credentials(addr).await.unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.as_str(), c.session_token.as_deref()),
            ("ASIAEXAMPLE", "secret/EXAMPLE", Some("session-token"))
        );
        assert_eq!(seen.lock().unwrap()[0], "PUT /latest/api/token", "IMDSv2: the token first");
        assert!(!format!("{c:?}").contains("secret"), "credentials print without the secret");
    }

    #[tokio::test]
    async fn a_role_without_credentials_and_a_missing_service_are_errors() {
        let (addr, _) = fake_imds("Expired").await;
        assert!(matches!(instance_credentials(addr).await.unwrap_err(), ImdsError::NotIssued { code, .. } if code == "Expired"));
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        assert!(matches!(instance_credentials(closed).await.unwrap_err(), ImdsError::Call { source: HttpError::Connect { .. }, .. }));
    }
}
