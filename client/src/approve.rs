//! `conclave approve`: shows a request that waits for approvals, exactly
//! as its initiator signed it, and approves it with an approver's key.

use crate::Failure;
use conclave_client::governance::PendingView;
use conclave_client::Client;
use conclave_proto::request::{RequestBody, SignPayload};
use serde_json::json;

/// What an approver reads before approving.
fn shown(p: &PendingView) -> Vec<(&'static str, String)> {
    let mut rows = vec![("request_id", p.body.request_id().to_string()), ("initiator", hex::encode(p.request.initiator))];
    let (wallet, scheme) = p.body.wallet();
    rows.push(("wallet", format!("{wallet} ({scheme})")));
    if let RequestBody::Sign(s) = &p.body {
        rows.push(("key_version", s.version.to_string()));
        if !s.path.is_empty() {
            rows.push(("path", std::iter::once("m".to_string()).chain(s.path.iter().map(u32::to_string)).collect::<Vec<_>>().join("/")));
        }
        match &s.payload {
            SignPayload::Message(m) => rows.push(("message", hex::encode(m))),
            SignPayload::Digest(d) => rows.push(("digest", format!("{} (the signers cannot see what it is a digest of)", hex::encode(d)))),
            SignPayload::EthEip1559(tx) => match conclave_proto::eth::decode_unsigned(tx) {
                Ok(tx) => {
                    rows.push(("chain_id", tx.chain_id.to_string()));
                    rows.push(("to", tx.to.map_or("(contract creation)".to_string(), |a| a.to_string())));
                    rows.push(("value_wei", tx.value.to_string()));
                    rows.push(("nonce", tx.nonce.to_string()));
                    rows.push(("data", format!("{} bytes", tx.data.len())));
                }
                Err(e) => rows.push(("eth_tx", format!("does not decode: {e}"))),
            },
        }
    }
    rows.push(("issued_at_ms", p.body.issued_at_ms().to_string()));
    rows.push(("body_sha256", hex::encode(p.hash)));
    if let Some(s) = &p.status {
        rows.push(("needs", format!("{} of group {} (rule {}), {} counted, until {} ms", s.required, s.group, s.rule, s.approved.len(), s.until_ms)));
    }
    rows
}

/// Shows the request, approves it, and reports how many approvals it holds.
pub async fn approve(client: &Client, request_id: &conclave_proto::RequestId, key: &std::path::Path, json: bool) -> Result<(), Failure> {
    let key = conclave_client::config::read_key(key)?;
    let pending = client.pending(request_id).await?;
    let rows = shown(&pending);
    if !json {
        eprintln!("approving:");
        for (k, v) in &rows {
            eprintln!("  {k:>13}: {v}");
        }
    }
    let held = client.approve(&pending, &key).await?;
    let fields: serde_json::Map<String, serde_json::Value> = rows.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    crate::print(
        json,
        json!({"approved": fields, "approvals_held": held, "approver": hex::encode(key.verifying_key().to_bytes())}),
        &[("approvals_held", held.to_string())],
    );
    Ok(())
}
