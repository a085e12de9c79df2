//! One HTTP/1.1 exchange on a connection the caller opened (plain or TLS):
//! the host's calls to the Consul agent and to the instance metadata
//! service.

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper_util::rt::TokioIo;

/// Sends `request` on `io` and returns the response head; the body is read
/// by the caller (with its own size limit).
pub async fn send<T>(io: TokioIo<T>, request: Request<Full<Bytes>>) -> Result<hyper::Response<hyper::body::Incoming>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
    // The connection task ends when the response is read or dropped.
    tokio::spawn(connection);
    sender.send_request(request).await.map_err(|e| e.to_string())
}
