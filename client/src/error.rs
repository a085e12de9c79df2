//! What can go wrong for a client.

use conclave_proto::{ErrorCode, RequestError};

/// A client-side failure, or the cluster's typed answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The configuration cannot be used.
    #[error("config: {0}")]
    Config(String),
    /// NATS failed.
    #[error("nats: {0}")]
    Nats(String),
    /// The cluster answered with an error.
    #[error("{0}")]
    Request(RequestError),
    /// No result within the timeout.
    #[error("no result for request {request_id} within {timeout_ms} ms")]
    Timeout {
        /// The request.
        request_id: String,
        /// The timeout.
        timeout_ms: u64,
    },
    /// A result that does not fit the request.
    #[error("unexpected result: {0}")]
    BadResult(String),
    /// A key, record or result that the pinned signers did not sign as
    /// they must (`unauthenticated_result`): never use what it says.
    #[error("not signed by the signers: {0}")]
    Unauthenticated(String),
    /// A signature that does not verify: never use it.
    #[error("signature does not verify: {0}")]
    BadSignature(String),
}

impl ClientError {
    /// The cluster's error code, if the cluster answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Request(e) => Some(e.code),
            _ => None,
        }
    }
}
