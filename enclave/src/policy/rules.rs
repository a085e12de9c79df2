//! Which rule of a policy decides a sign request: a matching deny rule
//! wins; else the first matching allow rule of those that name the wallet
//! most specifically allows it, with its requirements; else it is denied
//! (`conclave_proto::policy::Rule`). Pure, so that every case is a unit test.

use conclave_proto::eth::{Address, Eip1559Tx};
use conclave_proto::policy::{Conditions, Ed25519Key, Effect, PayloadKind, Policy, Rule};
use conclave_proto::WalletId;

/// What the rules can see of a sign request.
pub struct Facts<'a> {
    /// The wallet.
    pub wallet: &'a WalletId,
    /// The initiator's key (already checked against the configured ones).
    pub initiator: Ed25519Key,
    /// The payload's kind.
    pub payload: PayloadKind,
    /// For typed payloads: what moves where.
    pub transfer: Option<Transfer>,
    /// Unix ms, by this signer's clock.
    pub now_ms: u64,
}

/// What a typed payload moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// The chain.
    pub chain_id: u64,
    /// The destination (none: contract creation).
    pub to: Option<Address>,
    /// How much, in the chain's smallest unit.
    pub amount: u128,
}

impl From<&Eip1559Tx> for Transfer {
    fn from(tx: &Eip1559Tx) -> Transfer {
        Transfer { chain_id: tx.chain_id, to: tx.to, amount: tx.value }
    }
}

/// The decision.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'p> {
    /// No rule names the wallet: it signs as without a policy.
    Unruled,
    /// This allow rule matched; its requirements still apply.
    Allowed(&'p Rule),
    /// Refused: by this rule, or (none) because no allow rule matched.
    Denied {
        /// The deny rule that matched, or the first allow rule that did not.
        rule: Option<&'p str>,
        /// Why, for people.
        why: String,
    },
}

/// Applies `policy` to a request.
pub fn evaluate<'p>(policy: &'p Policy, facts: &Facts<'_>) -> Verdict<'p> {
    let rules = policy.rules_for(facts.wallet);
    if rules.is_empty() {
        return Verdict::Unruled;
    }
    if let Some(deny) = rules.iter().find(|r| r.effect == Effect::Deny && mismatch(&r.when, facts).is_none()) {
        return Verdict::Denied { rule: Some(&deny.name), why: format!("rule {:?} denies it", deny.name) };
    }
    let mut first_miss = None;
    for rule in policy.allow_rules_for(facts.wallet) {
        match mismatch(&rule.when, facts) {
            None => return Verdict::Allowed(rule),
            Some(why) => {
                first_miss.get_or_insert((rule.name.as_str(), why));
            }
        }
    }
    match first_miss {
        Some((rule, why)) => Verdict::Denied { rule: Some(rule), why: format!("rule {rule:?} does not allow it: {why}") },
        None => Verdict::Denied { rule: None, why: format!("no rule allows signing with {}", facts.wallet) },
    }
}

/// The first condition `facts` fail, or none if all hold.
fn mismatch(when: &Conditions, facts: &Facts<'_>) -> Option<String> {
    if let Some(keys) = &when.initiators {
        if !keys.contains(&facts.initiator) {
            return Some(format!("initiator {} is not one of its initiators", facts.initiator));
        }
    }
    if let Some(kinds) = &when.payloads {
        if !kinds.contains(&facts.payload) {
            return Some(format!("payload kind {:?} is not one of {kinds:?}", facts.payload));
        }
    }
    if let Some(hours) = &when.hours {
        if !hours.contains(facts.now_ms) {
            return Some(format!("outside its hours ({:?}, {:02}:00 to {:02}:00 UTC)", hours.days, hours.from_hour, hours.to_hour));
        }
    }
    if when.needs_typed_payload() {
        let Some(t) = &facts.transfer else {
            return Some("it names destinations, chains or amounts, which only a typed payload shows".into());
        };
        if let Some(chains) = &when.chain_ids {
            if !chains.contains(&t.chain_id) {
                return Some(format!("chain {} is not one of {chains:?}", t.chain_id));
            }
        }
        if let Some(allowed) = &when.destinations {
            match &t.to {
                Some(to) if allowed.contains(to) => {}
                Some(to) => return Some(format!("destination {to} is not on its list")),
                None => return Some("a contract creation has no destination on its list".into()),
            }
        }
        if let Some(cap) = when.max_amount {
            if t.amount > cap.0 {
                return Some(format!("amount {} exceeds its cap of {}", t.amount, cap.0));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "0101010101010101010101010101010101010101010101010101010101010101";

    fn policy() -> Policy {
        Policy::parse(&format!(
            r#"{{"v": 1, "version": 1, "rules": [
                {{"name": "office-hours", "wallets": ["treasury-*"], "effect": "allow",
                  "when": {{"hours": {{"days": ["mon", "tue", "wed", "thu", "fri"], "from_hour": 9, "to_hour": 17}}, "initiators": ["{ALICE}"]}}}},
                {{"name": "payouts", "wallets": ["hot"], "effect": "allow",
                  "when": {{"destinations": ["0x00000000000000000000000000000000000000aa"], "max_amount": "100", "chain_ids": [1]}}}},
                {{"name": "no-digests", "wallets": ["*"], "effect": "deny", "when": {{"payloads": ["digest"]}}}},
                {{"name": "the-rest", "wallets": ["*"], "effect": "allow", "when": {{"payloads": ["digest"]}}}}
            ]}}"#
        ))
        .unwrap()
    }

    // 2026-11-30 (a Monday) 10:00 UTC, and the Sunday before.
    const MONDAY_10: u64 = 1_796_032_800_000;
    const SUNDAY_10: u64 = MONDAY_10 - 86_400_000;

    fn facts<'a>(wallet: &'a WalletId, payload: PayloadKind, now_ms: u64, transfer: Option<Transfer>) -> Facts<'a> {
        let mut key = [0; 32];
        hex::decode_to_slice(ALICE, &mut key).unwrap();
        Facts { wallet, initiator: Ed25519Key(key), payload, transfer, now_ms }
    }

    #[test]
    fn deny_wins_the_first_matching_allow_rule_decides_and_unnamed_wallets_are_unruled() {
        let p = policy();
        let treasury = WalletId::new("treasury-1").unwrap();
        assert!(matches!(evaluate(&p, &facts(&treasury, PayloadKind::Message, MONDAY_10, None)), Verdict::Allowed(r) if r.name == "office-hours"));
        assert_eq!(
            evaluate(&p, &facts(&treasury, PayloadKind::Digest, MONDAY_10, None)),
            Verdict::Denied { rule: Some("no-digests"), why: "rule \"no-digests\" denies it".into() }
        );
        match evaluate(&p, &facts(&treasury, PayloadKind::Message, SUNDAY_10, None)) {
            Verdict::Denied { rule: Some("office-hours"), why } => assert!(why.contains("outside its hours"), "{why}"),
            other => panic!("{other:?}"),
        }
        let mut someone_else = facts(&treasury, PayloadKind::Message, MONDAY_10, None);
        someone_else.initiator = Ed25519Key([9; 32]);
        assert!(matches!(evaluate(&p, &someone_else), Verdict::Denied { rule: Some("office-hours"), .. }));
        // `*` rules govern this wallet: the catch-all allows digests only,
        // and the deny rule refuses those.
        let cold = WalletId::new("cold").unwrap();
        match evaluate(&p, &facts(&cold, PayloadKind::Message, MONDAY_10, None)) {
            Verdict::Denied { rule: Some("the-rest"), why } => assert!(why.contains("payload kind"), "{why}"),
            other => panic!("{other:?}"),
        }
        // The catch-all does not govern treasury wallets, which have rules
        // of their own: out of hours they are refused.
        assert!(matches!(evaluate(&p, &facts(&treasury, PayloadKind::Digest, SUNDAY_10, None)), Verdict::Denied { rule: Some("no-digests"), .. }));
        assert!(matches!(evaluate(&p, &facts(&treasury, PayloadKind::Message, SUNDAY_10, None)), Verdict::Denied { rule: Some("office-hours"), .. }));
        let deny_only =
            Policy::parse(r#"{"v": 1, "version": 1, "rules": [{"name": "d", "wallets": ["*"], "effect": "deny", "when": {"payloads": ["digest"]}}]}"#).unwrap();
        assert!(
            matches!(evaluate(&deny_only, &facts(&cold, PayloadKind::Message, MONDAY_10, None)), Verdict::Denied { rule: None, .. }),
            "named by a rule, allowed by none"
        );
        let empty = Policy::parse(r#"{"v": 1, "version": 1, "rules": []}"#).unwrap();
        assert_eq!(evaluate(&empty, &facts(&cold, PayloadKind::Digest, MONDAY_10, None)), Verdict::Unruled);
    }

    #[test]
    fn destinations_chains_and_caps_need_a_typed_payload_and_hold_it_to_them() {
        let p = policy();
        let hot = WalletId::new("hot").unwrap();
        let pay = |to: &str, amount: u128, chain_id: u64| Some(Transfer { chain_id, to: Some(to.parse().unwrap()), amount });
        let good = "0x00000000000000000000000000000000000000AA";
        assert!(matches!(evaluate(&p, &facts(&hot, PayloadKind::EthEip1559, MONDAY_10, pay(good, 100, 1))), Verdict::Allowed(_)));
        let creation = Some(Transfer { chain_id: 1, to: None, amount: 0 });
        for (transfer, expect) in [
            (pay(good, 101, 1), "exceeds its cap"),
            (pay("0x00000000000000000000000000000000000000bb", 1, 1), "is not on its list"),
            (creation, "contract creation"),
            (pay(good, 1, 5), "chain 5"),
            (None, "only a typed payload shows"),
        ] {
            match evaluate(&p, &facts(&hot, PayloadKind::EthEip1559, MONDAY_10, transfer)) {
                Verdict::Denied { rule: Some("payouts"), why } => assert!(why.contains(expect), "{why}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
