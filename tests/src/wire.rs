//! The client API at the wire level, as a client in another language would
//! use it: sign a body string, publish with a message id, read the result
//! stream. Tests use it to send what the SDK never would.

use conclave_proto::request::{RequestBody, SignedRequest};
use conclave_proto::result::RequestResult;
use conclave_proto::subjects::{result_subject, RESULT_STREAM};
use conclave_proto::RequestId;
use ed25519_dalek::Signer;
use futures::StreamExt;
use std::time::Duration;

/// Signs `body` with `key` as the request format prescribes.
pub fn sign_request(body: &RequestBody, key: &ed25519_dalek::SigningKey) -> SignedRequest {
    let body = serde_json::to_string(body).unwrap();
    let signature = key.sign(&SignedRequest::signing_bytes(&body)).to_bytes();
    SignedRequest { v: conclave_proto::PROTOCOL_VERSION, body, initiator: key.verifying_key().to_bytes(), signature }
}

/// Publishes raw bytes to a request subject with `Nats-Msg-Id`, and waits
/// for the result of that request id.
pub async fn request_raw(nats_url: &str, subject: &str, msg_id: &str, payload: Vec<u8>) -> RequestResult {
    let client = async_nats::connect(nats_url).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let id = RequestId::new(msg_id).unwrap();
    let mut sub = client.subscribe(result_subject(&id)).await.unwrap();
    let publish = async_nats::jetstream::message::PublishMessage::build().payload(payload.into()).message_id(msg_id);
    js.send_publish(subject.to_string(), publish).await.unwrap().await.unwrap();
    // The result may already be stored if we were slow to listen.
    let stream = js.get_stream(RESULT_STREAM).await.unwrap();
    if let Ok(stored) = stream.get_last_raw_message_by_subject(&result_subject(&id)).await {
        return RequestResult::decode(&stored.payload).unwrap();
    }
    let msg = tokio::time::timeout(Duration::from_secs(120), sub.next()).await.unwrap_or_else(|_| panic!("no result for {msg_id} in time")).unwrap();
    RequestResult::decode(&msg.payload).unwrap()
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}
