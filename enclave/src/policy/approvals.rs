//! Counting approvals: each must be by a member of the rule's group, over
//! this exact request body's hash, with a signature that verifies; each
//! approver counts once. Whatever the host put in the plan, only these
//! count.

use conclave_proto::policy::{Approval, ApprovalRule, Ed25519Key, Policy};

/// The approvers whose approvals of the request (SHA-256 of its body)
/// count for `rule`, in the order given.
pub fn count(policy: &Policy, rule: &ApprovalRule, request: &[u8; 32], approvals: &[Approval]) -> Vec<Ed25519Key> {
    let Some(group) = policy.approver_groups.get(&rule.group) else {
        return Vec::new();
    };
    let bytes = Approval::signing_bytes(request);
    let mut counted = Vec::new();
    for a in approvals {
        if a.v != conclave_proto::PROTOCOL_VERSION || a.request != *request || !group.contains(&a.approver) || counted.contains(&a.approver) {
            continue;
        }
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&a.approver.0) else {
            continue;
        };
        if key.verify_strict(&bytes, &ed25519_dalek::Signature::from_bytes(&a.signature)).is_ok() {
            counted.push(a.approver);
        }
    }
    counted
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn approve(key: &SigningKey, request: &[u8; 32]) -> Approval {
        Approval {
            v: 1,
            request: *request,
            approver: Ed25519Key(key.verifying_key().to_bytes()),
            signature: key.sign(&Approval::signing_bytes(request)).to_bytes(),
        }
    }

    #[test]
    fn only_group_members_approving_this_request_with_valid_signatures_count_once_each() {
        let keys: Vec<SigningKey> = (1..=4).map(|i| SigningKey::from_bytes(&[i; 32])).collect();
        let group: Vec<String> = keys[..3].iter().map(|k| format!("\"{}\"", hex::encode(k.verifying_key().to_bytes()))).collect();
        let policy = Policy::parse(&format!(
            r#"{{"v": 1, "version": 1, "approver_groups": {{"ops": [{}]}}, "rules": [
                {{"name": "r", "wallets": ["*"], "effect": "allow", "require": {{"approvals": {{"group": "ops", "count": 2, "window_s": 60}}}}}}]}}"#,
            group.join(",")
        ))
        .unwrap();
        let rule = policy.rules[0].require.approvals.clone().unwrap();
        let (this, other) = ([1; 32], [2; 32]);
        let mut forged = approve(&keys[2], &this);
        forged.signature[0] ^= 1;
        let approvals = [
            approve(&keys[0], &this),
            approve(&keys[0], &this),  // counted once
            approve(&keys[1], &other), // another request
            approve(&keys[3], &this),  // not in the group
            forged,
            Approval { v: 2, ..approve(&keys[2], &this) },
        ];
        assert_eq!(count(&policy, &rule, &this, &approvals), [Ed25519Key(keys[0].verifying_key().to_bytes())]);
        let enough = [approve(&keys[1], &this), approve(&keys[2], &this)];
        assert_eq!(count(&policy, &rule, &this, &enough).len(), 2);
    }
}
