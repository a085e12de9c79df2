//! Counters for `/metrics` (Prometheus text format).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use crate::lifecycle::Phase;
use conclave_proto::link::DropReason;
use conclave_proto::ErrorCode;

/// The `code` label of `conclave_rejected_total` for an envelope whose
/// header names another recipient or sender than its NATS subject (the
/// other codes are `ErrorCode`s).
pub const MISADDRESSED: &str = "misaddressed";

/// The `kind` labels of `conclave_requests_total`.
pub const REQUEST_KINDS: [&str; 4] = ["keygen", "sign", "reshare", "undecodable"];

/// The `outcome` labels of `conclave_presignatures_total` (presignatures
/// this host's keeper asked its set for).
pub const PRESIGN_OUTCOMES: [&str; 2] = ["made", "failed"];
/// The `reason` labels of `conclave_presign_fallbacks_total`: sign requests
/// that could have used a presignature and ran the full protocol.
pub const PRESIGN_FALLBACKS: [&str; 2] = ["empty", "unavailable"];
/// The `protocol` labels of `conclave_pool_plans_total`: sign requests
/// that could use a presignature, as this host planned them.
pub const POOL_PLANS: [&str; 2] = ["presigned", "full"];

/// The host's counters and gauges.
#[derive(Default)]
pub struct Metrics {
    labelled: Mutex<BTreeMap<(&'static str, String), u64>>,
    /// Unused presignatures per pool this host keeps, at its last look.
    pool_levels: Mutex<BTreeMap<String, u32>>,
    /// Envelopes forwarded to the enclave.
    pub envelopes_in: AtomicU64,
    /// Envelopes published for peers.
    pub envelopes_out: AtomicU64,
    /// Sessions started and not yet finished.
    pub sessions_active: AtomicU64,
    /// Whether the enclave link is up.
    pub link_up: AtomicBool,
    /// Whether NATS is connected.
    pub nats_connected: AtomicBool,
    /// Ready peers at the last heartbeat.
    pub peers_ready: AtomicU64,
    /// Registered nodes at the last heartbeat.
    pub members: AtomicU64,
    /// Whether the enclave's Paillier prime pool is filled.
    pub primes_ready: AtomicBool,
    /// Requests this host moved to a new attempt with another quorum.
    pub failovers: AtomicU64,
    /// Requests this host follows (not yet answered, deadline not passed).
    pub following: AtomicU64,
    /// Heavy sessions (ECDSA's Paillier rounds) that waited for their turn
    /// at the signer's CPU...
    pub heavy_waited: AtomicU64,
    /// ...and how long, in all (ms).
    pub heavy_wait_ms: AtomicU64,
}

impl Metrics {
    /// Every counter at zero, each label value it can take included: a
    /// sample that is absent means a metric that does not exist, never a
    /// count of zero.
    pub fn new() -> Metrics {
        let metrics = Metrics::default();
        {
            let mut labelled = metrics.labelled.lock().expect("metrics lock");
            let mut zero = |name: &'static str, value: &str| {
                labelled.insert((name, value.to_owned()), 0);
            };
            for kind in REQUEST_KINDS {
                zero("conclave_requests_total", kind);
            }
            zero("conclave_results_total", "ok");
            zero("conclave_rejected_total", MISADDRESSED);
            for code in ErrorCode::ALL {
                zero("conclave_results_total", code.as_str());
                zero("conclave_rejected_total", code.as_str());
            }
            for phase in Phase::ALL {
                zero("conclave_session_transitions_total", phase.as_str());
            }
            for reason in DropReason::ALL {
                zero("conclave_envelopes_dropped_total", reason.as_str());
            }
            for outcome in PRESIGN_OUTCOMES {
                zero("conclave_presignatures_total", outcome);
            }
            for reason in PRESIGN_FALLBACKS {
                zero("conclave_presign_fallbacks_total", reason);
            }
            for protocol in POOL_PLANS {
                zero("conclave_pool_plans_total", protocol);
            }
        }
        metrics
    }

    /// Adds one to `name{label="value"}`.
    pub fn inc(&self, name: &'static str, label: impl Into<String>) {
        *self.labelled.lock().expect("metrics lock").entry((name, label.into())).or_default() += 1;
    }

    /// Sets a pool's level gauge (`pool`: `<wallet>/<scheme>/v<version>/<signers>[/m/<path>]`).
    pub fn set_pool_level(&self, pool: String, level: u32) {
        self.pool_levels.lock().expect("metrics lock").insert(pool, level);
    }

    /// Every pool level this host reports.
    pub fn pool_levels(&self) -> BTreeMap<String, u32> {
        self.pool_levels.lock().expect("metrics lock").clone()
    }

    /// Renders every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let label = |name: &str| match name {
            "conclave_requests_total" => "kind",
            "conclave_results_total" => "status",
            "conclave_session_transitions_total" => "to",
            "conclave_envelopes_dropped_total" | "conclave_presign_fallbacks_total" => "reason",
            "conclave_presignatures_total" => "outcome",
            "conclave_pool_plans_total" => "protocol",
            _ => "code",
        };
        for ((name, value), count) in self.labelled.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "{name}{{{}=\"{value}\"}} {count}", label(name));
        }
        let gauges = [
            ("conclave_envelopes_in_total", self.envelopes_in.load(Ordering::Relaxed)),
            ("conclave_envelopes_out_total", self.envelopes_out.load(Ordering::Relaxed)),
            ("conclave_sessions_active", self.sessions_active.load(Ordering::Relaxed)),
            ("conclave_link_up", u64::from(self.link_up.load(Ordering::Relaxed))),
            ("conclave_nats_connected", u64::from(self.nats_connected.load(Ordering::Relaxed))),
            ("conclave_peers_ready", self.peers_ready.load(Ordering::Relaxed)),
            ("conclave_members", self.members.load(Ordering::Relaxed)),
            ("conclave_primes_ready", u64::from(self.primes_ready.load(Ordering::Relaxed))),
            ("conclave_failovers_total", self.failovers.load(Ordering::Relaxed)),
            ("conclave_requests_following", self.following.load(Ordering::Relaxed)),
            ("conclave_heavy_sessions_waited_total", self.heavy_waited.load(Ordering::Relaxed)),
            ("conclave_heavy_sessions_wait_ms_total", self.heavy_wait_ms.load(Ordering::Relaxed)),
        ];
        for (name, v) in gauges {
            let _ = writeln!(out, "{name} {v}");
        }
        for (pool, level) in self.pool_levels.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "conclave_presign_pool_level{{pool=\"{pool}\"}} {level}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_exported_from_the_start() {
        let metrics = Metrics::new();
        let text = metrics.render();
        for sample in [
            "conclave_rejected_total{code=\"bad_envelope\"} 0",
            "conclave_envelopes_dropped_total{reason=\"no_room\"} 0",
            "conclave_session_transitions_total{to=\"cleaned\"} 0",
            "conclave_requests_total{kind=\"reshare\"} 0",
            "conclave_results_total{status=\"ok\"} 0",
        ] {
            assert!(text.lines().any(|l| l == sample), "{sample} in\n{text}");
        }
        metrics.inc("conclave_rejected_total", ErrorCode::BadEnvelope.as_str());
        assert!(metrics.render().lines().any(|l| l == "conclave_rejected_total{code=\"bad_envelope\"} 1"));
    }
}
