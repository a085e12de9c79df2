//! What makes a request authorised. The enclave, not the host, decides: a
//! request must be signed by a configured initiator key, be fresh, and the
//! host's plan must fit the request; a sign request must also pass the
//! admins' policy (`rules`), within what the signer counted (`ledger`).

pub(crate) mod approvals;
pub(crate) mod ledger;
pub(crate) mod rules;
pub(crate) mod tally;

use crate::config::EnclaveConfig;
use conclave_proto::link::{Purpose, SessionPlan};
use conclave_proto::request::{RequestBody, SignedRequest};
use conclave_proto::{codec, ErrorCode, NodeId, RequestError};
use ed25519_dalek::{Signature, VerifyingKey};
use std::collections::HashSet;

/// How far in the future a request may be dated (clock skew).
const MAX_SKEW_MS: u64 = 60_000;
/// Longest session a plan may ask for.
pub(crate) const MAX_SESSION_MS: u64 = 15 * 60_000;
/// Shorter round timeouts would blame peers for ordinary scheduling noise.
pub(crate) const MIN_ROUND_TIMEOUT_MS: u64 = 500;

/// Checks the request's signature and shape, that it is not dated in the
/// future, and that `plan` is a plan for it that includes this node and
/// only known nodes. How old it may be depends on the policy (a request
/// that waits for approvals waits longer): see [`fresh`].
pub fn authorise(
    config: &EnclaveConfig,
    known: &HashSet<&NodeId>,
    request: &SignedRequest,
    plan: &SessionPlan,
    now_ms: u64,
) -> Result<RequestBody, RequestError> {
    codec::check_version("request", request.v)?;
    let initiator = VerifyingKey::from_bytes(&request.initiator).ok().filter(|k| config.initiators.contains(k)).ok_or_else(|| {
        RequestError::new(ErrorCode::Unauthorized, format!("initiator key {} is not configured on node {}", hex::encode(request.initiator), config.node_id))
    })?;
    initiator
        .verify_strict(&SignedRequest::signing_bytes(&request.body), &Signature::from_bytes(&request.signature))
        .map_err(|_| RequestError::new(ErrorCode::Unauthorized, "request signature does not verify"))?;
    let body = request.parse_body()?;
    body.validate()?;
    if body.issued_at_ms() > now_ms + MAX_SKEW_MS {
        return Err(RequestError::new(ErrorCode::Expired, "request is dated in the future"));
    }
    check_plan(config, known, &body, plan, now_ms)?;
    Ok(body)
}

/// Refuses a request issued (at `issued`, Unix ms) more than `max_age`
/// before `now_ms`.
pub fn fresh(issued: u64, max_age: std::time::Duration, now_ms: u64) -> Result<(), RequestError> {
    if issued.saturating_add(max_age.as_millis() as u64) < now_ms {
        return Err(RequestError::new(ErrorCode::Expired, format!("request issued {} s ago", (now_ms - issued) / 1000)));
    }
    Ok(())
}

/// A plan's `planned_ms` (its place in line for the CPU) must not lie
/// ahead of this signer's clock by more than clocks drift apart. An old one
/// is a retry's, or a request's that waited for approvals: any host may put
/// its sessions first in line, which only decides whose turn comes first.
pub(crate) fn planned_in_the_past(planned_ms: u64, now_ms: u64) -> Result<(), String> {
    if planned_ms > now_ms + MAX_SKEW_MS {
        return Err(format!("planned {} ms in the future", planned_ms - now_ms));
    }
    Ok(())
}

fn check_plan(config: &EnclaveConfig, known: &HashSet<&NodeId>, body: &RequestBody, plan: &SessionPlan, now_ms: u64) -> Result<(), RequestError> {
    let bad = |reason: String| RequestError::new(ErrorCode::Malformed, format!("session plan: {reason}"));
    if plan.request_id != *body.request_id() {
        return Err(bad("made for another request".into()));
    }
    if plan.attempt == 0 {
        return Err(bad("attempt 0".into()));
    }
    let distinct: HashSet<_> = plan.participants.iter().collect();
    if distinct.len() != plan.participants.len() {
        return Err(bad("names a node twice".into()));
    }
    if let Some(unknown) = plan.participants.iter().find(|p| !known.contains(p)) {
        return Err(bad(format!("{unknown} is not in this node's roster")));
    }
    if !distinct.contains(&config.node_id) {
        return Err(bad(format!("{} is not a participant", config.node_id)));
    }
    // A plan that reaches this signer after its deadline (a queue longer
    // than the CPU signs in time) ran out of time; it is not malformed.
    if plan.deadline_ms <= now_ms {
        return Err(RequestError::new(ErrorCode::Timeout, format!("attempt {}'s deadline passed before this signer could start it", plan.attempt)));
    }
    if plan.deadline_ms > now_ms + MAX_SESSION_MS {
        return Err(bad("deadline too far ahead".into()));
    }
    if plan.round_timeout_ms < MIN_ROUND_TIMEOUT_MS || plan.round_timeout_ms > MAX_SESSION_MS {
        return Err(bad(format!("round timeout {} ms out of range", plan.round_timeout_ms)));
    }
    planned_in_the_past(plan.planned_ms, now_ms).map_err(bad)?;
    if !plan.purpose.is_request() && !matches!(body, RequestBody::Sign(_)) {
        return Err(bad("only a sign request renews aux info or uses a presignature".into()));
    }
    match body {
        RequestBody::Keygen(k) => {
            if distinct != k.committee.iter().collect() {
                return Err(bad("keygen participants differ from the requested committee".into()));
            }
        }
        RequestBody::Reshare(r) => {
            // Every new member, and old members only besides: enough of them
            // to deal (each one in the session deals).
            if let Some(missing) = r.new_committee.iter().find(|n| !distinct.contains(n)) {
                return Err(bad(format!("new member {missing} is not a participant")));
            }
            if let Some(stranger) = plan.participants.iter().find(|p| !r.new_committee.contains(p) && !r.committee.contains(p)) {
                return Err(bad(format!("{stranger} is in neither the old nor the new committee")));
            }
            let dealers = plan.participants.iter().filter(|p| r.committee.contains(p)).count();
            if dealers < usize::from(r.threshold) {
                return Err(bad(format!("{dealers} old members deal, the key needs {}", r.threshold)));
            }
        }
        RequestBody::Sign(s) => {
            // An attempt that renews aux info takes the whole committee
            // (checked where the share is opened); the signers named sign
            // in the attempt after it.
            let signing: HashSet<_> = match &plan.purpose {
                Purpose::Request | Purpose::Presigned { .. } => distinct,
                Purpose::RenewAux { then } => then.iter().collect(),
            };
            if let Some(signers) = &s.signers {
                if signing != signers.iter().collect() {
                    return Err(bad("signers differ from those the request names".into()));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_proto::request::{KeygenRequest, RequestBody, SignRequest};
    use conclave_proto::{RequestId, Scheme, WalletId};
    use ed25519_dalek::{Signer, SigningKey};

    fn node(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn config(initiator: &SigningKey) -> EnclaveConfig {
        EnclaveConfig {
            node_id: node("a"),
            mode: conclave_proto::link::Mode::Dev,
            link: "unix:/tmp/x".parse().unwrap(),
            state_dir: "/tmp".into(),
            roster: "/tmp/r".into(),
            initiators: vec![initiator.verifying_key()],
            max_request_age: std::time::Duration::from_secs(300),
            presign_pools: conclave_proto::presign::PoolSizes::new(4, Default::default()).unwrap(),
            heavy_sessions: 4,
            admins: None,
            hsm: None,
            nitro: None,
            dev_attestation_ca: None,
        }
    }

    fn signed(key: &SigningKey, issued_at_ms: u64) -> SignedRequest {
        let body = serde_json::to_string(&RequestBody::Keygen(KeygenRequest {
            request_id: RequestId::new("r").unwrap(),
            wallet: WalletId::new("w").unwrap(),
            scheme: Scheme::Eddsa,
            threshold: 2,
            committee: vec![node("a"), node("b")],
            issued_at_ms,
        }))
        .unwrap();
        let signature = key.sign(&SignedRequest::signing_bytes(&body)).to_bytes();
        SignedRequest { v: 1, body, initiator: key.verifying_key().to_bytes(), signature }
    }

    fn sign_request(key: &SigningKey, issued_at_ms: u64, signers: &[&str]) -> SignedRequest {
        let body = serde_json::to_string(&RequestBody::Sign(SignRequest {
            request_id: RequestId::new("r").unwrap(),
            wallet: WalletId::new("w").unwrap(),
            scheme: Scheme::Ecdsa,
            version: 1,
            payload: conclave_proto::request::SignPayload::Message(b"m".to_vec()),
            path: vec![],
            signers: Some(signers.iter().map(|s| node(s)).collect()),
            timeout_ms: None,
            issued_at_ms,
        }))
        .unwrap();
        let signature = key.sign(&SignedRequest::signing_bytes(&body)).to_bytes();
        SignedRequest { v: 1, body, initiator: key.verifying_key().to_bytes(), signature }
    }

    fn plan(participants: &[&str], deadline_ms: u64) -> SessionPlan {
        SessionPlan {
            request_id: RequestId::new("r").unwrap(),
            attempt: 1,
            participants: participants.iter().map(|p| node(p)).collect(),
            deadline_ms,
            planned_ms: deadline_ms.saturating_sub(10_000),
            round_timeout_ms: 10_000,
            purpose: Purpose::Request,
            approvals: Vec::new(),
        }
    }

    #[test]
    fn only_configured_initiators_with_valid_signatures_pass() {
        let good = SigningKey::from_bytes(&[1; 32]);
        let stranger = SigningKey::from_bytes(&[2; 32]);
        let cfg = config(&good);
        let (a, b) = (node("a"), node("b"));
        let known: HashSet<&NodeId> = [&a, &b].into_iter().collect();
        let now = 1_000_000;
        let p = plan(&["a", "b"], now + 1000);
        assert!(authorise(&cfg, &known, &signed(&good, now), &p, now).is_ok());
        let e = authorise(&cfg, &known, &signed(&stranger, now), &p, now).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthorized);
        let mut tampered = signed(&good, now);
        tampered.body = tampered.body.replace("\"threshold\":2", "\"threshold\":1");
        assert_eq!(authorise(&cfg, &known, &tampered, &p, now).unwrap_err().code, ErrorCode::Unauthorized);
        let stale = signed(&good, now - 301_000);
        let body = authorise(&cfg, &known, &stale, &p, now).expect("age is judged after the policy");
        assert_eq!(fresh(body.issued_at_ms(), cfg.max_request_age, now).unwrap_err().code, ErrorCode::Expired);
        assert!(fresh(body.issued_at_ms(), cfg.max_request_age * 2, now).is_ok());
        let future = signed(&good, now + MAX_SKEW_MS + 1);
        assert_eq!(authorise(&cfg, &known, &future, &p, now).unwrap_err().code, ErrorCode::Expired);
    }

    #[test]
    fn plans_must_fit_the_request() {
        let good = SigningKey::from_bytes(&[1; 32]);
        let cfg = config(&good);
        let (a, b, c) = (node("a"), node("b"), node("c"));
        let known: HashSet<&NodeId> = [&a, &b, &c].into_iter().collect();
        let now = 1_000_000;
        for p in [plan(&["a", "c"], now + 1000), plan(&["b", "c"], now + 1000), plan(&["a", "b"], now + MAX_SESSION_MS + 1), plan(&["a", "a"], now + 1)] {
            let e = authorise(&cfg, &known, &signed(&good, now), &p, now).unwrap_err();
            assert_eq!(e.code, ErrorCode::Malformed, "{p:?}");
        }
        // Only a sign request renews aux info.
        let renew = SessionPlan { purpose: Purpose::RenewAux { then: vec![a.clone(), b.clone()] }, ..plan(&["a", "b"], now + 1000) };
        assert_eq!(authorise(&cfg, &known, &signed(&good, now), &renew, now).unwrap_err().code, ErrorCode::Malformed);
        // A place in line from the future; one from long ago (a retry's) is
        // a place like any other.
        let ahead = SessionPlan { planned_ms: now + MAX_SKEW_MS + 1, ..plan(&["a", "b"], now + 1000) };
        assert_eq!(authorise(&cfg, &known, &signed(&good, now), &ahead, now).unwrap_err().code, ErrorCode::Malformed);
        let old = SessionPlan { planned_ms: 0, ..plan(&["a", "b"], now + 1000) };
        assert!(authorise(&cfg, &known, &signed(&good, now), &old, now).is_ok());
        // Late, not malformed: the deadline passed on the way here.
        let late = authorise(&cfg, &known, &signed(&good, now), &plan(&["a", "b"], now), now).unwrap_err();
        assert_eq!(late.code, ErrorCode::Timeout, "{late}");
    }

    #[test]
    fn an_aux_renewal_takes_the_committee_and_then_the_named_signers() {
        let good = SigningKey::from_bytes(&[1; 32]);
        let cfg = config(&good);
        let (a, b, c) = (node("a"), node("b"), node("c"));
        let known: HashSet<&NodeId> = [&a, &b, &c].into_iter().collect();
        let now = 1_000_000;
        let request = sign_request(&good, now, &["a", "b"]);
        let renew = |then: Vec<NodeId>| SessionPlan { purpose: Purpose::RenewAux { then }, ..plan(&["a", "b", "c"], now + 1000) };
        assert!(authorise(&cfg, &known, &request, &renew(vec![a.clone(), b.clone()]), now).is_ok());
        assert_eq!(authorise(&cfg, &known, &request, &renew(vec![a.clone(), c.clone()]), now).unwrap_err().code, ErrorCode::Malformed);
        // Outside a renewal, the whole committee is not the signers named.
        assert_eq!(authorise(&cfg, &known, &request, &plan(&["a", "b", "c"], now + 1000), now).unwrap_err().code, ErrorCode::Malformed);
    }
}
