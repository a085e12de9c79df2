//! Signatures by a signer: by its identity key, or by a key it made for
//! this run and certified with its identity key.
//!
//! In hsm mode the identity key lives in the PKCS#11 token, where one
//! Ed25519 signature costs about half a millisecond of the token's CPU, and
//! a signature request needs six (two broadcasts, the decision's audit
//! entry, the result's, the audit head, the statement). So at start the
//! signer makes a run key in its memory (where its shares are opened
//! anyway) and has the token sign a certificate for it: the node, the run
//! key's public half and how long it may be used. Everything else is signed
//! by the run key and carries the certificate, so a verifier still needs
//! only the pinned identity key. This is the shape of TLS delegated
//! credentials (RFC 9345): a short-lived key certified by the long-term
//! one, checked against its validity by whoever verifies, so a run key read
//! out of a compromised process stops being believed a day later, while the
//! identity key never leaves the token.
//!
//! Dev and nitro signers keep the identity key in memory already and sign
//! with it directly (no certificate).

use crate::codec;
use crate::NodeId;
use serde::{Deserialize, Serialize};

/// Domain separation for an identity key's certificate of a run key.
pub const RUN_KEY_SIGNING_CONTEXT: &[u8] = b"conclave/run-key/v1\n";
/// How long a run key may be used after its certificate is made (ms).
pub const RUN_KEY_LIFETIME_MS: u64 = 24 * 60 * 60 * 1000;
/// How far a verifier's clock may run ahead of the signer's (ms): a
/// signature made just before its run key's end still counts this long.
pub const RUN_KEY_SKEW_MS: u64 = 60_000;
/// Bytes of a run key's certificate in binary ([`RunKey::to_bytes`]).
pub const RUN_KEY_BYTES: usize = 32 + 8 + 64;

/// A run key's certificate: its public half and until when it is valid,
/// signed by the identity key of the node it speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunKey {
    /// The run key's Ed25519 public key.
    #[serde(with = "codec::hex_array")]
    pub key: [u8; 32],
    /// Unix ms after which nothing it signed counts.
    pub not_after_ms: u64,
    /// The node's identity signature over [`RunKey::signing_bytes`].
    #[serde(with = "codec::hex_array")]
    pub signature: [u8; 64],
}

impl RunKey {
    /// The bytes the identity key signs: a fixed context, the node it
    /// speaks for, the key and its end.
    pub fn signing_bytes(node: &NodeId, key: &[u8; 32], not_after_ms: u64) -> Vec<u8> {
        [RUN_KEY_SIGNING_CONTEXT, node.as_str().as_bytes(), b"\n", key, &not_after_ms.to_be_bytes()].concat()
    }

    /// Its binary form for envelopes: key, end (big-endian), signature.
    pub fn to_bytes(&self) -> [u8; RUN_KEY_BYTES] {
        let mut out = [0; RUN_KEY_BYTES];
        out[..32].copy_from_slice(&self.key);
        out[32..40].copy_from_slice(&self.not_after_ms.to_be_bytes());
        out[40..].copy_from_slice(&self.signature);
        out
    }

    /// Reads [`RunKey::to_bytes`].
    pub fn from_bytes(bytes: &[u8; RUN_KEY_BYTES]) -> RunKey {
        let (key, rest) = bytes.split_at(32);
        let (end, signature) = rest.split_at(8);
        RunKey {
            key: key.try_into().expect("32 bytes"),
            not_after_ms: u64::from_be_bytes(end.try_into().expect("8 bytes")),
            signature: signature.try_into().expect("64 bytes"),
        }
    }
}

/// A signer's signature and, if a run key made it, that key's certificate.
/// On the wire the two are sibling fields `signature` and `run_key` (absent
/// for the identity key) of whatever was signed, so that records signed
/// before run keys existed still read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSignature {
    /// The Ed25519 signature.
    pub signature: [u8; 64],
    /// The run key that made it; none: the identity key did.
    pub run_key: Option<RunKey>,
}

impl NodeSignature {
    /// Whether this is `node`'s signature over `bytes`, made at `at_ms`
    /// (Unix ms: the verifier's clock, or the time a signed record states).
    /// `verify(key, bytes, signature)` checks one Ed25519 signature under
    /// `key`, or under `node`'s pinned identity key for `None`; it is never
    /// handed a key the verifier did not pin except a run key that pinned
    /// key certified for `node`, valid at `at_ms`.
    pub fn holds(&self, node: &NodeId, bytes: &[u8], at_ms: u64, verify: impl Fn(Option<&[u8; 32]>, &[u8], &[u8; 64]) -> bool) -> bool {
        match &self.run_key {
            None => verify(None, bytes, &self.signature),
            Some(run) => {
                at_ms <= run.not_after_ms.saturating_add(RUN_KEY_SKEW_MS)
                    && verify(None, &RunKey::signing_bytes(node, &run.key, run.not_after_ms), &run.signature)
                    && verify(Some(&run.key), bytes, &self.signature)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> NodeId {
        NodeId::new(name).unwrap()
    }

    /// A signature a stand-in verifier accepts: key (none: the identity
    /// key), bytes, signature.
    type Valid = (Option<[u8; 32]>, Vec<u8>, [u8; 64]);

    /// A stand-in verifier that accepts exactly the signatures listed:
    /// what a real one would for a real key.
    fn accepts(valid: Vec<Valid>) -> impl Fn(Option<&[u8; 32]>, &[u8], &[u8; 64]) -> bool {
        move |key, bytes, sig| valid.iter().any(|(k, b, s)| k.as_ref() == key && b == bytes && s == sig)
    }

    #[test]
    fn a_run_key_counts_only_as_certified_for_its_node_and_until_its_end() {
        let run = RunKey { key: [7; 32], not_after_ms: 1_000_000, signature: [1; 64] };
        let signed = NodeSignature { signature: [2; 64], run_key: Some(run) };
        let verify = accepts(vec![(None, RunKey::signing_bytes(&node("n1"), &[7; 32], 1_000_000), [1; 64]), (Some([7; 32]), b"m".to_vec(), [2; 64])]);
        assert!(signed.holds(&node("n1"), b"m", 1_000_000 + RUN_KEY_SKEW_MS, &verify));
        assert!(!signed.holds(&node("n1"), b"m", 1_000_001 + RUN_KEY_SKEW_MS, &verify), "past its end");
        assert!(!signed.holds(&node("n2"), b"m", 0, &verify), "certified for another node");
        assert!(!signed.holds(&node("n1"), b"other", 0, &verify), "another message");
        let stretched = NodeSignature { run_key: Some(RunKey { not_after_ms: u64::MAX, ..run }), ..signed };
        assert!(!stretched.holds(&node("n1"), b"m", 2_000_000, &verify), "an end the identity key did not sign");
        let direct = NodeSignature { signature: [2; 64], run_key: None };
        assert!(!direct.holds(&node("n1"), b"m", 0, &verify), "the run key's signature is not the identity key's");
        assert!(direct.holds(&node("n1"), b"m", 0, accepts(vec![(None, b"m".to_vec(), [2; 64])])));
    }

    #[test]
    fn the_binary_form_reads_back() {
        let run = RunKey { key: [7; 32], not_after_ms: 0x0102_0304_0506_0708, signature: [9; 64] };
        assert_eq!(RunKey::from_bytes(&run.to_bytes()), run);
    }
}
