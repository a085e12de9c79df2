//! Approval policies: the document an admin quorum signs, the approvals
//! approvers sign, and their exact signed bytes. Each signer checks both
//! itself (the enclave's `policy` module); the host, NATS and the registry
//! only carry them.
//!
//! Like a request ([`crate::request::SignedRequest`]), a policy travels as
//! the JSON string the admins signed, so that admins on different machines
//! sign the same bytes with any tool and nothing has to be canonicalised.

use crate::codec::{self, DecodeError};
use crate::WalletId;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Domain separation for an admin's signature on a policy document.
pub const POLICY_SIGNING_CONTEXT: &[u8] = b"conclave/policy/v1\n";
/// Domain separation for an approver's signature on a request.
pub const APPROVAL_SIGNING_CONTEXT: &[u8] = b"conclave/approval/v1\n";
/// Largest signed policy on the wire.
pub const MAX_POLICY_BYTES: usize = 64 * 1024;
/// Most rules in one policy.
pub const MAX_RULES: usize = 256;
/// Most approver groups, and most keys in any list of keys or addresses.
pub const MAX_LIST: usize = 64;
/// Longest a request may wait for its approvals (7 days): the signers keep
/// what they counted for it at least this long.
pub const MAX_APPROVAL_WINDOW_S: u64 = 7 * 24 * 3600;
/// Longest velocity window (31 days).
pub const MAX_VELOCITY_WINDOW_S: u64 = 31 * 24 * 3600;
/// Longest rule or group name.
pub const MAX_NAME: usize = 64;

/// An Ed25519 public key (an admin's, an approver's, an initiator's), hex
/// on the wire.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ed25519Key(#[serde(with = "codec::hex_array")] pub [u8; 32]);

impl fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", hex::encode(self.0))
    }
}

impl fmt::Display for Ed25519Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", hex::encode(self.0))
    }
}

/// A policy as submitted: the document string and the admins' signatures
/// over [`SignedPolicy::signing_bytes`]. Signatures may be gathered one
/// admin at a time (`conclave policy sign`) and joined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedPolicy {
    /// Must be [`crate::PROTOCOL_VERSION`].
    pub v: u16,
    /// The [`Policy`] as a JSON string, exactly as signed.
    pub document: String,
    /// Admin signatures.
    pub signatures: Vec<AdminSignature>,
}

/// One admin's signature on a policy document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSignature {
    /// The admin's key.
    pub admin: Ed25519Key,
    /// Ed25519 signature over [`SignedPolicy::signing_bytes`].
    #[serde(with = "codec::hex_array")]
    pub signature: [u8; 64],
}

impl SignedPolicy {
    /// The bytes each admin signs: a fixed context string followed by the
    /// document string.
    pub fn signing_bytes(document: &str) -> Vec<u8> {
        [POLICY_SIGNING_CONTEXT, document.as_bytes()].concat()
    }

    /// Decodes a signed policy from untrusted bytes and parses and checks
    /// its document. The signatures are *not* checked here; signers do.
    pub fn decode(bytes: &[u8]) -> Result<(SignedPolicy, Policy), PolicyError> {
        let signed: SignedPolicy = codec::decode_json("signed policy", bytes, MAX_POLICY_BYTES)?;
        codec::check_version("signed policy", signed.v)?;
        let policy = signed.parse()?;
        Ok((signed, policy))
    }

    /// Parses and checks the document.
    pub fn parse(&self) -> Result<Policy, PolicyError> {
        if self.signatures.len() > MAX_LIST {
            return Err(PolicyError::Decode(DecodeError::TooLarge { what: "admin signatures", len: self.signatures.len(), limit: MAX_LIST }));
        }
        Policy::parse(&self.document)
    }
}

/// What the admins decide: who may have which wallet sign what, and with
/// whose approval. Versions only go up: a signer refuses a document whose
/// version is not above the one it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Must be [`crate::PROTOCOL_VERSION`].
    pub v: u16,
    /// The policy's version, from 1.
    pub version: u32,
    /// Named groups of approver keys that rules require approvals from.
    #[serde(default)]
    pub approver_groups: BTreeMap<String, Vec<Ed25519Key>>,
    /// The rules, in order: the first allow rule that matches a request is
    /// the one whose requirements apply.
    pub rules: Vec<Rule>,
}

/// One rule. A rule applies to the wallets its patterns match. A matching
/// deny rule wins, whatever its pattern; else, of the allow rules with the
/// most specific pattern naming the wallet (an exact id, then the longest
/// prefix, then `*`), the first that matches allows the request, with its
/// requirements; else the request is denied. So `treasury-*` rules govern
/// `treasury-eur` even when a `*` rule allows every other wallet. A wallet
/// no rule names signs as if there were no policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Named in denials and in the audit trail.
    pub name: String,
    /// Which wallets: an exact id, a prefix ending in `*`, or `*`.
    pub wallets: Vec<WalletPattern>,
    /// Allow or deny what matches.
    pub effect: Effect,
    /// What a request must be for the rule to match (all of it).
    #[serde(default, skip_serializing_if = "Conditions::is_empty")]
    pub when: Conditions,
    /// What an allowed request must also have (allow rules only).
    #[serde(default, skip_serializing_if = "Requirements::is_empty")]
    pub require: Requirements,
}

/// Whether a matching rule allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Allow, subject to the rule's requirements.
    Allow,
    /// Deny, whatever any other rule says.
    Deny,
}

/// A wallet id or a prefix pattern (`treasury-*`, `*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct WalletPattern(String);

impl WalletPattern {
    /// Whether `wallet` is one this pattern names.
    pub fn matches(&self, wallet: &WalletId) -> bool {
        self.specificity(wallet).is_some()
    }

    /// How specifically this pattern names `wallet`, if it does: an exact
    /// id above any prefix, a longer prefix above a shorter one.
    pub fn specificity(&self, wallet: &WalletId) -> Option<usize> {
        match self.0.strip_suffix('*') {
            Some(prefix) => wallet.as_str().starts_with(prefix).then_some(prefix.len()),
            None => (wallet.as_str() == self.0).then_some(usize::MAX),
        }
    }
}

impl TryFrom<String> for WalletPattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let stem = s.strip_suffix('*').unwrap_or(&s);
        // A pattern is a wallet id or a prefix of one: the same characters.
        if stem.contains('*') || (!stem.is_empty() && WalletId::new(stem).is_err()) || (stem.is_empty() && s != "*") {
            return Err(format!("wallet pattern {s:?}: a wallet id, a prefix of one followed by `*`, or `*`"));
        }
        Ok(WalletPattern(s))
    }
}

impl From<WalletPattern> for String {
    fn from(p: WalletPattern) -> String {
        p.0
    }
}

/// The conditions of a rule; an absent condition matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// Only requests signed by one of these initiator keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initiators: Option<Vec<Ed25519Key>>,
    /// Only these payload kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payloads: Option<Vec<PayloadKind>>,
    /// Only at these times (UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hours: Option<Hours>,
    /// Typed payloads only: only on these chains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_ids: Option<Vec<u64>>,
    /// Typed payloads only: only to these destinations (`0x` addresses,
    /// either case; a contract creation has none and never matches).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destinations: Option<Vec<crate::eth::Address>>,
    /// Typed payloads only: only transfers of at most this amount (in the
    /// chain's smallest unit, e.g. wei, as a decimal string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_amount: Option<Amount>,
}

impl Conditions {
    fn is_empty(&self) -> bool {
        *self == Conditions::default()
    }

    /// Whether the rule can only match typed payloads (a raw message or
    /// digest shows no destination or amount).
    pub fn needs_typed_payload(&self) -> bool {
        self.chain_ids.is_some() || self.destinations.is_some() || self.max_amount.is_some()
    }
}

/// What an allow rule requires beyond its conditions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requirements {
    /// Approvals from a group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<ApprovalRule>,
    /// Limits over a sliding window, counted by each signer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub velocity: Option<Velocity>,
}

impl Requirements {
    fn is_empty(&self) -> bool {
        *self == Requirements::default()
    }
}

/// `count` distinct approvers of `group` must approve the exact request
/// within `window_s` of its issue time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalRule {
    /// The approver group.
    pub group: String,
    /// How many of its members.
    pub count: u16,
    /// How long after the request was issued approvals count (seconds);
    /// then it fails with `approval_expired`.
    pub window_s: u64,
}

/// At most `max_signatures` signatures, and (typed payloads) at most
/// `max_amount` in total, per wallet in any `window_s` seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Velocity {
    /// The sliding window, in seconds.
    pub window_s: u64,
    /// Most signatures in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_signatures: Option<u32>,
    /// Most value moved in the window (typed payloads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_amount: Option<Amount>,
}

/// UTC days and hours: `from_hour` inclusive to `to_hour` exclusive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hours {
    /// The days.
    pub days: BTreeSet<Weekday>,
    /// First hour (0 to 23).
    pub from_hour: u8,
    /// Hour after the last (1 to 24).
    pub to_hour: u8,
}

impl Hours {
    /// Whether Unix time `ms` falls in the window.
    pub fn contains(&self, ms: u64) -> bool {
        let secs = ms / 1000;
        let days = secs / 86_400;
        let hour = ((secs % 86_400) / 3600) as u8;
        // 1970-01-01 was a Thursday.
        let day = Weekday::ALL[((days + 3) % 7) as usize];
        self.days.contains(&day) && (self.from_hour..self.to_hour).contains(&hour)
    }
}

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(missing_docs)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    /// Monday first.
    pub const ALL: [Weekday; 7] = [Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri, Weekday::Sat, Weekday::Sun];
}

/// The kind of a sign request's payload, as rules name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PayloadKind {
    /// A message the signer hashes.
    Message,
    /// A digest signed as is: the signer cannot know what it signs.
    Digest,
    /// An unsigned Ethereum EIP-1559 transaction, which rules can read.
    EthEip1559,
}

/// An amount in a chain's smallest unit, a decimal string on the wire
/// (JSON numbers lose precision above 2^53).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Amount(pub u128);

impl TryFrom<String> for Amount {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if s.is_empty() || s.len() > 39 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("amount {s:?}: a decimal integer"));
        }
        s.parse().map(Amount).map_err(|_| format!("amount {s:?} is too large"))
    }
}

impl From<Amount> for String {
    fn from(a: Amount) -> String {
        a.0.to_string()
    }
}

/// Why a policy document is refused before any signature is checked.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Size, JSON shape or version.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A rule or group that cannot be applied as written.
    #[error("policy: {0}")]
    Invalid(String),
}

impl PolicyError {
    /// The wire error code.
    pub fn code(&self) -> crate::ErrorCode {
        match self {
            PolicyError::Decode(e) => e.code(),
            PolicyError::Invalid(_) => crate::ErrorCode::Malformed,
        }
    }
}

impl From<PolicyError> for crate::RequestError {
    fn from(e: PolicyError) -> Self {
        crate::RequestError::new(e.code(), e)
    }
}

impl Policy {
    /// Parses a document string and checks it.
    pub fn parse(document: &str) -> Result<Policy, PolicyError> {
        let policy: Policy = codec::decode_json("policy", document.as_bytes(), MAX_POLICY_BYTES)?;
        codec::check_version("policy", policy.v)?;
        policy.validate()?;
        Ok(policy)
    }

    /// Checks what serde cannot: names, references, ranges.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let bad = |s: String| Err(PolicyError::Invalid(s));
        if self.version == 0 {
            return bad("version 0: policies start at version 1".into());
        }
        if self.rules.len() > MAX_RULES || self.approver_groups.len() > MAX_LIST {
            return bad(format!("at most {MAX_RULES} rules and {MAX_LIST} approver groups"));
        }
        for (name, keys) in &self.approver_groups {
            name_ok("approver group", name)?;
            if keys.is_empty() || keys.len() > MAX_LIST || keys.iter().collect::<BTreeSet<_>>().len() != keys.len() {
                return bad(format!("approver group {name:?}: 1 to {MAX_LIST} distinct keys"));
            }
        }
        let mut names = BTreeSet::new();
        for rule in &self.rules {
            let r = &rule.name;
            name_ok("rule", r)?;
            if !names.insert(r) {
                return bad(format!("rule {r:?} is named twice"));
            }
            if rule.wallets.is_empty() || rule.wallets.len() > MAX_LIST {
                return bad(format!("rule {r:?}: 1 to {MAX_LIST} wallet patterns"));
            }
            let w = &rule.when;
            let lists = [
                w.initiators.as_ref().map(Vec::len),
                w.payloads.as_ref().map(Vec::len),
                w.chain_ids.as_ref().map(Vec::len),
                w.destinations.as_ref().map(Vec::len),
            ];
            if lists.into_iter().flatten().any(|n| n == 0 || n > MAX_LIST) {
                return bad(format!("rule {r:?}: a condition's list holds 1 to {MAX_LIST} entries (leave it out to match anything)"));
            }
            if let Some(h) = &w.hours {
                if h.days.is_empty() || h.from_hour >= h.to_hour || h.to_hour > 24 {
                    return bad(format!("rule {r:?}: hours need at least one day and 0 <= from_hour < to_hour <= 24"));
                }
            }
            if rule.effect == Effect::Deny && !rule.require.is_empty() {
                return bad(format!("rule {r:?}: a deny rule has no requirements"));
            }
            if let Some(a) = &rule.require.approvals {
                let Some(group) = self.approver_groups.get(&a.group) else {
                    return bad(format!("rule {r:?}: no approver group {:?}", a.group));
                };
                if a.count == 0 || usize::from(a.count) > group.len() {
                    return bad(format!("rule {r:?}: {} approvals of a group of {}", a.count, group.len()));
                }
                if !(1..=MAX_APPROVAL_WINDOW_S).contains(&a.window_s) {
                    return bad(format!("rule {r:?}: approval window of 1 to {MAX_APPROVAL_WINDOW_S} s"));
                }
            }
            if let Some(v) = &rule.require.velocity {
                if !(1..=MAX_VELOCITY_WINDOW_S).contains(&v.window_s) || (v.max_signatures.is_none() && v.max_amount.is_none()) {
                    return bad(format!("rule {r:?}: velocity needs a window of 1 to {MAX_VELOCITY_WINDOW_S} s and a limit"));
                }
            }
        }
        Ok(())
    }

    /// The rules that name `wallet`, in order.
    pub fn rules_for(&self, wallet: &WalletId) -> Vec<&Rule> {
        self.rules.iter().filter(|r| r.wallets.iter().any(|p| p.matches(wallet))).collect()
    }

    /// The allow rules that govern `wallet`: those whose pattern names it
    /// most specifically, in order.
    pub fn allow_rules_for(&self, wallet: &WalletId) -> Vec<&Rule> {
        let specificity = |r: &Rule| r.wallets.iter().filter_map(|p| p.specificity(wallet)).max();
        let allows = self.rules.iter().filter(|r| r.effect == Effect::Allow);
        let best = allows.clone().filter_map(specificity).max();
        allows.filter(|r| best.is_some() && specificity(r) == best).collect()
    }

    /// The longest time the signers must remember a signature to apply
    /// this policy (velocity windows, approval windows), in ms.
    pub fn memory_ms(&self) -> u64 {
        let windows = self.rules.iter().flat_map(|r| [r.require.velocity.as_ref().map(|v| v.window_s), r.require.approvals.as_ref().map(|a| a.window_s)]);
        windows.flatten().max().unwrap_or(0) * 1000
    }
}

fn name_ok(what: &str, name: &str) -> Result<(), PolicyError> {
    let ok = !name.is_empty() && name.len() <= MAX_NAME && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(PolicyError::Invalid(format!("{what} name {name:?}: 1 to {MAX_NAME} of a-z, A-Z, 0-9, - and _")))
    }
}

/// An approver's signature on one request: on the SHA-256 of the exact
/// request body string the initiator signed, so it covers the wallet, the
/// path, the payload and everything else, and serves no other request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Must be [`crate::PROTOCOL_VERSION`].
    pub v: u16,
    /// SHA-256 of the request body string.
    #[serde(with = "codec::hex_array")]
    pub request: [u8; 32],
    /// The approver's key.
    pub approver: Ed25519Key,
    /// Ed25519 signature over [`Approval::signing_bytes`].
    #[serde(with = "codec::hex_array")]
    pub signature: [u8; 64],
}

impl Approval {
    /// The bytes an approver signs: a fixed context string followed by
    /// the request body's SHA-256.
    pub fn signing_bytes(request: &[u8; 32]) -> Vec<u8> {
        [APPROVAL_SIGNING_CONTEXT, request.as_slice()].concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_APPROVERS: &str = r#"{
        "v": 1, "version": 2,
        "approver_groups": {"approvers": ["0101010101010101010101010101010101010101010101010101010101010101",
                                          "0202020202020202020202020202020202020202020202020202020202020202"]},
        "rules": [
            {"name": "treasury", "wallets": ["treasury-*"], "effect": "allow",
             "when": {"payloads": ["message"], "hours": {"days": ["mon", "fri"], "from_hour": 9, "to_hour": 17}},
             "require": {"approvals": {"group": "approvers", "count": 2, "window_s": 3600},
                         "velocity": {"window_s": 86400, "max_signatures": 3, "max_amount": "1000000000000000000000"}}},
            {"name": "no-digests", "wallets": ["*"], "effect": "deny", "when": {"payloads": ["digest"]}}
        ]}"#;

    #[test]
    fn the_documented_shape_parses_and_rules_name_wallets_by_pattern() {
        let p = Policy::parse(TWO_APPROVERS).unwrap();
        assert_eq!(p.version, 2);
        let treasury = WalletId::new("treasury-eur").unwrap();
        let names: Vec<_> = p.rules_for(&treasury).iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["treasury", "no-digests"]);
        let hot = WalletId::new("hot-1").unwrap();
        assert_eq!(p.rules_for(&hot).len(), 1);
        assert_eq!(p.rules[0].require.velocity.as_ref().unwrap().max_amount, Some(Amount(10u128.pow(21))));
        assert_eq!(p.memory_ms(), 86_400_000);
        let again: Policy = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(again, p);
    }

    #[test]
    fn hours_are_utc_days_and_hours() {
        let h = Hours { days: [Weekday::Mon].into(), from_hour: 9, to_hour: 17 };
        // 2026-11-30 was a Monday.
        let monday_0900 = 1_796_029_200_000;
        assert!(h.contains(monday_0900));
        assert!(!h.contains(monday_0900 - 1));
        assert!(!h.contains(monday_0900 + 8 * 3_600_000));
        assert!(!h.contains(monday_0900 + 24 * 3_600_000));
    }

    #[test]
    fn documents_that_cannot_be_applied_as_written_are_refused() {
        let edit = |from: &str, to: &str| Policy::parse(&TWO_APPROVERS.replacen(from, to, 1));
        for (from, to) in [
            (r#""version": 2"#, r#""version": 0"#),
            (r#""count": 2"#, r#""count": 3"#),
            (r#""count": 2"#, r#""count": 0"#),
            (r#""group": "approvers""#, r#""group": "nobody""#),
            (r#""window_s": 3600"#, r#""window_s": 999999999"#),
            (r#""from_hour": 9"#, r#""from_hour": 17"#),
            (r#""name": "no-digests""#, r#""name": "treasury""#),
            (r#""name": "no-digests""#, r#""name": "no digests""#),
            (r#"["treasury-*"]"#, r#"["tre*sury"]"#),
            (r#"["treasury-*"]"#, r#"[]"#),
            (r#""effect": "deny", "when""#, r#""effect": "deny", "require": {"velocity": {"window_s": 1, "max_signatures": 1}}, "when""#),
            (r#""v": 1"#, r#""v": 2"#),
            (r#""effect": "allow""#, r#""effect": "allow", "surprise": 1"#),
            (r#""max_amount": "1000000000000000000000""#, r#""max_amount": 1000"#),
        ] {
            assert!(edit(from, to).is_err(), "{to}");
        }
        let with_destination = |d: &str| Policy::parse(&TWO_APPROVERS.replacen(r#""payloads": ["message"]"#, &format!(r#""destinations": ["{d}"]"#), 1));
        assert!(with_destination("0x52908400098527886E0F7030069857D2E4169EE7").is_ok());
        assert!(with_destination("0x5290").is_err());
        let big = SignedPolicy { v: 1, document: " ".repeat(MAX_POLICY_BYTES + 1), signatures: vec![] };
        assert!(matches!(big.parse(), Err(PolicyError::Decode(DecodeError::TooLarge { .. }))));
    }

    #[test]
    fn signed_bytes_are_context_then_exact_text() {
        assert_eq!(SignedPolicy::signing_bytes("{}"), b"conclave/policy/v1\n{}".to_vec());
        let mut expected = b"conclave/approval/v1\n".to_vec();
        expected.extend([7; 32]);
        assert_eq!(Approval::signing_bytes(&[7; 32]), expected);
    }
}
