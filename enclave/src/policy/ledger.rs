//! What a signer counted for one wallet's policy: each request a rule with
//! requirements let through, when, how much it moved, and in which run of
//! this signer. Sealed and stored through the host under a version floor,
//! so neither a restart nor a host (serving an old copy, or none) resets a
//! velocity count; and a request recorded by an earlier run is never run
//! again (this signer cannot know whether it already gave its share away).

use conclave_proto::codec;
use conclave_proto::policy::{Amount, Velocity};
use serde::{Deserialize, Serialize};

/// Most entries a wallet's ledger keeps: a policy whose windows would need
/// more denies further signatures instead of growing without bound.
pub const MAX_ENTRIES: usize = 10_000;

/// One wallet's ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Oldest first.
    pub entries: Vec<Entry>,
}

/// A request a rule let through.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// SHA-256 of the request body.
    #[serde(with = "codec::hex_array")]
    pub request: [u8; 32],
    /// The allowing rule.
    pub rule: String,
    /// When this signer let it through (Unix ms).
    pub at_ms: u64,
    /// What it moved (typed payloads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount: Option<Amount>,
    /// The signer run that let it through.
    #[serde(with = "codec::hex_array")]
    pub run: [u8; 16],
}

/// Why a request does not fit the ledger.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The rule's velocity limit is reached.
    #[error("{0}")]
    Velocity(String),
    /// The ledger is full.
    #[error("the wallet's ledger holds {MAX_ENTRIES} entries within the policy's windows")]
    Full,
}

impl Ledger {
    /// The entry of `request`, if any.
    pub fn find(&self, request: &[u8; 32]) -> Option<&Entry> {
        self.entries.iter().find(|e| e.request == *request)
    }

    /// Drops entries older than `keep_ms` before `now_ms`.
    pub fn prune(&mut self, now_ms: u64, keep_ms: u64) {
        self.entries.retain(|e| e.at_ms.saturating_add(keep_ms) > now_ms);
    }

    /// Records `entry` if `velocity` (of the entry's rule) allows one more.
    pub fn admit(&mut self, entry: Entry, velocity: Option<&Velocity>) -> Result<(), Refusal> {
        if let Some(v) = velocity {
            let since = entry.at_ms.saturating_sub(v.window_s * 1000);
            let recent = self.entries.iter().filter(|e| e.rule == entry.rule && e.at_ms > since);
            let (count, moved) = recent.fold((0u64, 0u128), |(n, sum), e| (n + 1, sum.saturating_add(e.amount.map_or(0, |a| a.0))));
            if let Some(max) = v.max_signatures {
                if count >= u64::from(max) {
                    return Err(Refusal::Velocity(format!("{count} signatures in the last {} s, the most it allows", v.window_s)));
                }
            }
            if let Some(max) = v.max_amount {
                let total = moved.saturating_add(entry.amount.map_or(0, |a| a.0));
                if total > max.0 {
                    return Err(Refusal::Velocity(format!("{total} moved in the last {} s would exceed its limit of {}", v.window_s, max.0)));
                }
            }
        }
        if self.entries.len() >= MAX_ENTRIES {
            return Err(Refusal::Full);
        }
        self.entries.push(entry);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8, at_ms: u64, amount: Option<u128>) -> Entry {
        Entry { request: [n; 32], rule: "hot".into(), at_ms, amount: amount.map(Amount), run: [0; 16] }
    }

    #[test]
    fn velocity_counts_signatures_and_amounts_in_a_sliding_window() {
        let v = Velocity { window_s: 60, max_signatures: Some(2), max_amount: None };
        let mut l = Ledger::default();
        l.admit(entry(1, 1_000, None), Some(&v)).unwrap();
        l.admit(entry(2, 2_000, None), Some(&v)).unwrap();
        assert!(matches!(l.admit(entry(3, 60_999, None), Some(&v)), Err(Refusal::Velocity(_))), "two in the window already");
        l.admit(entry(3, 61_000, None), Some(&v)).expect("the first left the window");
        let other_rule = Entry { rule: "other".into(), ..entry(4, 61_000, None) };
        l.admit(other_rule, Some(&v)).expect("counted per rule");

        let by_amount = Velocity { window_s: 60, max_signatures: None, max_amount: Some(Amount(100)) };
        let mut l = Ledger::default();
        l.admit(entry(1, 1_000, Some(60)), Some(&by_amount)).unwrap();
        assert!(l.admit(entry(2, 2_000, Some(41)), Some(&by_amount)).is_err());
        l.admit(entry(2, 2_000, Some(40)), Some(&by_amount)).unwrap();
        assert!(l.find(&[2; 32]).is_some());
        l.prune(61_500, 60_000);
        assert_eq!(l.entries.len(), 1, "only the entry from 2 s survives a minute's memory at 61.5 s");
    }
}
