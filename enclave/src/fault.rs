//! Fault injection for the end-to-end tests, all of it in one place. A hook
//! is armed by an environment variable, and exists only in builds with the
//! `fault-injection` feature, which only the test crate (`conclave-tests`)
//! enables: a signer built on its own (`cargo build --release -p
//! conclave-enclave`, the image in `eif/`) has no hook, whatever its
//! environment says. Callers keep hooks that cheat to dev mode.

/// A hook the tests can arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// As a resharing dealer, send sub-shares that do not match the
    /// commitments, as a cheating dealer would (dev mode).
    ReshareTamper,
    /// As a new member of a reshare, stop right after storing the new
    /// share, before acknowledging it (dev mode).
    ReshareCrashBeforeAck,
    /// Attestation documents bind keys this node does not use, as a node
    /// whose identity was swapped would (dev mode).
    AttestForeignKeys,
    /// `conclave-enclave reseal` aborts (as a kill would) after the number
    /// of blobs the variable holds.
    ResealAbortAfter,
    /// The prime pool takes its sets from a file of pregenerated primes
    /// (`path#index`: a JSON list of sets; this signer takes the one at
    /// `index` every time) instead of minutes of CPU.
    PregeneratedPrimes,
    /// As a signer of a presigned signature, stop right after taking the
    /// presignature (its floor raised), before its partial leaves (dev mode).
    PresignCrashAfterTake,
    /// As a signer of a presigned signature, send a partial signature that
    /// does not match the presignature, as a cheating signer would (dev mode).
    PresignTamper,
}

impl Hook {
    /// The environment variable that arms it.
    pub const fn env(self) -> &'static str {
        match self {
            Hook::ReshareTamper => "CONCLAVE_FAULT_RESHARE_TAMPER",
            Hook::ReshareCrashBeforeAck => "CONCLAVE_FAULT_RESHARE_CRASH_BEFORE_ACK",
            Hook::AttestForeignKeys => "CONCLAVE_FAULT_ATTEST_FOREIGN_KEYS",
            Hook::ResealAbortAfter => "CONCLAVE_FAULT_RESEAL_ABORT_AFTER",
            Hook::PregeneratedPrimes => "CONCLAVE_FAULT_PREGENERATED_PRIMES",
            Hook::PresignCrashAfterTake => "CONCLAVE_FAULT_PRESIGN_CRASH_AFTER_TAKE",
            Hook::PresignTamper => "CONCLAVE_FAULT_PRESIGN_TAMPER",
        }
    }
}

/// Whether hooks exist in this build. Each place that acts on a hook checks
/// it too, so that without the feature the compiler drops the hook's code,
/// messages included (the crate's own unit tests drive some hooks
/// directly).
pub const ENABLED: bool = cfg!(any(test, feature = "fault-injection"));

/// The hook's value if it is armed (always none without the feature).
#[cfg(feature = "fault-injection")]
pub fn armed(hook: Hook) -> Option<String> {
    let value = std::env::var(hook.env()).ok()?;
    tracing::warn!(hook = ?hook, "FAULT INJECTION armed");
    Some(value)
}

/// The hook's value if it is armed (always none without the feature).
#[cfg(not(feature = "fault-injection"))]
pub fn armed(_: Hook) -> Option<String> {
    None
}
