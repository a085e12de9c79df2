//! One HTTP/1.1 exchange on a connection the caller opened (plain or TLS):
//! the host's calls to the Consul agent and to the instance metadata
//! service.

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper_util::rt::TokioIo;

/// Why an HTTP call got no usable answer. Every case is a transport
/// failure (worth another try later); an answer with an error status is the
/// caller's to judge.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The TCP connection failed.
    #[error("connect {addr}: {source}")]
    Connect {
        /// Where.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed (or the server name is not valid).
    #[error("TLS: {0}")]
    Tls(String),
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Exchange(#[from] hyper::Error),
    /// The request could not be built.
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
    /// The answer's body failed or was over the limit.
    #[error("reading the answer: {0}")]
    Body(String),
    /// No answer within the call's time limit.
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
}

/// Sends `request` on `io` and returns the response head; the body is read
/// by the caller (with its own size limit).
pub async fn send<T>(io: TokioIo<T>, request: Request<Full<Bytes>>) -> Result<hyper::Response<hyper::body::Incoming>, HttpError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    // The connection task ends when the response is read or dropped.
    tokio::spawn(connection);
    Ok(sender.send_request(request).await?)
}
