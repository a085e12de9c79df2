//! What the client believes: statements signed by the signers it pins.
//!
//! The client pins the roster's identity keys (the same roster file the
//! signers are configured with). A public key, an xpub, a wallet record or
//! a signature result counts only when the statement that carries it is
//! signed by the nodes that must vouch for it: every member of a key's
//! committee for a key or a record, a signer of the session for a
//! signature. Anything else is [`ClientError::Unauthenticated`], never a
//! printed key.

use crate::ClientError;
use conclave_proto::link::NodeIdentity;
use conclave_proto::result::{Completed, KeygenResult, SignResult};
use conclave_proto::run_key::NodeSignature;
use conclave_proto::statement::{Endorsed, Statement};
use conclave_proto::{NodeId, Scheme, WalletId};
use sha2::Digest;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;

/// The signers' identity keys, pinned from configuration.
#[derive(Debug, Clone)]
pub struct Roster(BTreeMap<NodeId, ed25519_dalek::VerifyingKey>);

/// Why a list of identities cannot be pinned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RosterError {
    /// A node's signing key is not an Ed25519 public key.
    #[error("{0}'s sign_key is not an Ed25519 key")]
    BadKey(NodeId),
    /// A node is listed twice.
    #[error("{0} is listed twice")]
    Duplicate(NodeId),
    /// The list is empty.
    #[error("no node")]
    Empty,
}

fn refused(what: impl std::fmt::Display) -> ClientError {
    ClientError::Unauthenticated(what.to_string())
}

impl Roster {
    /// Reads a roster file: the JSON list of node identities the signers
    /// are configured with (`roster` in `enclave.toml`).
    pub fn load(path: &Path) -> Result<Roster, ClientError> {
        let config = |m: String| ClientError::Config(format!("roster {}: {m}", path.display()));
        let bytes = std::fs::read(path).map_err(|e| config(e.to_string()))?;
        let nodes: Vec<NodeIdentity> = serde_json::from_slice(&bytes).map_err(|e| config(e.to_string()))?;
        Roster::new(nodes).map_err(|e| config(e.to_string()))
    }

    /// Pins these identities.
    pub fn new(nodes: Vec<NodeIdentity>) -> Result<Roster, RosterError> {
        let mut keys = BTreeMap::new();
        for n in nodes {
            let key = ed25519_dalek::VerifyingKey::from_bytes(&n.sign_key).map_err(|_| RosterError::BadKey(n.node_id.clone()))?;
            if keys.insert(n.node_id.clone(), key).is_some() {
                return Err(RosterError::Duplicate(n.node_id));
            }
        }
        if keys.is_empty() {
            return Err(RosterError::Empty);
        }
        Ok(Roster(keys))
    }

    /// The pinned nodes, sorted.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeId> {
        self.0.keys()
    }

    /// Checks an audit export offline against the pinned keys: every
    /// entry's and head's signature, the chains, and that no entry is
    /// missing, reordered or altered (the first bad entry of each node is
    /// named). A pinned node missing from the export is a fault too.
    pub fn check_audit(&self, export: &conclave_proto::audit::AuditExport) -> Vec<Result<conclave_proto::audit::LogSummary, String>> {
        let verify = |node: &NodeId, run_key: Option<&[u8; 32]>, bytes: &[u8], signature: &[u8; 64]| {
            self.0.get(node).is_some_and(|key| pinned(key)(run_key, bytes, signature))
        };
        let mut checked: Vec<Result<conclave_proto::audit::LogSummary, String>> =
            conclave_proto::audit::check_export(export, verify).into_iter().map(|r| r.map_err(|fault| fault.to_string())).collect();
        for node in self.nodes() {
            if !export.nodes.iter().any(|log| log.node == *node) {
                checked.push(Err(format!("{node}: its trail is not in the file")));
            }
        }
        checked
    }

    /// What `node` said, checked: signed by its pinned key.
    pub fn saying(&self, node: &NodeId, said: &conclave_proto::govern::Said) -> Result<conclave_proto::govern::Saying, ClientError> {
        let key = self.0.get(node).ok_or_else(|| refused(format!("{node} is not in the pinned roster")))?;
        let signed = NodeSignature { signature: said.signature, run_key: said.run_key };
        if !signed.holds(node, &conclave_proto::govern::Said::signing_bytes(&said.saying), crate::client::now_ms(), pinned(key)) {
            return Err(refused(format!("{node}'s signature on its answer does not verify")));
        }
        said.parse().map_err(|e| refused(format!("{node}'s answer: {e}")))
    }

    /// Checks every signature on `endorsed` (each by a pinned node, once)
    /// and that `required(statement)` nodes all signed; returns the
    /// statement. Signatures are checked over the received string before
    /// anything in it is believed.
    fn check(&self, endorsed: &Endorsed, required: impl FnOnce(&Statement) -> Result<Vec<NodeId>, ClientError>) -> Result<Statement, ClientError> {
        let statement = endorsed.parse().map_err(|e| refused(format!("the signed statement: {e}")))?;
        let bytes = Endorsed::signing_bytes(&endorsed.statement);
        let mut signed = HashSet::new();
        for e in &endorsed.endorsements {
            let key = self.0.get(&e.node).ok_or_else(|| refused(format!("signed by {}, which is not in the pinned roster", e.node)))?;
            if !(NodeSignature { signature: e.signature, run_key: e.run_key }).holds(&e.node, &bytes, crate::client::now_ms(), pinned(key)) {
                return Err(refused(format!("{}'s signature does not verify", e.node)));
            }
            if !signed.insert(&e.node) {
                return Err(refused(format!("{} signed twice", e.node)));
            }
            if let Some(head) = &e.audit_head {
                if !head.holds(&e.node, pinned(key)) {
                    return Err(refused(format!("{}'s audit head does not verify", e.node)));
                }
                let parsed = head.parse().map_err(|e| refused(format!("an audit head: {e}")))?;
                if parsed.node != e.node || parsed.nonce != statement.request {
                    return Err(refused(format!("{}'s audit head is not for this request", e.node)));
                }
            }
        }
        for node in required(&statement)? {
            if !signed.contains(&node) {
                return Err(refused(format!("{node} did not sign it")));
            }
        }
        Ok(statement)
    }

    /// A wallet record (a keygen's or reshare's statement), checked: every
    /// member of its committee signed it, and it is the record of `wallet`.
    pub fn record(&self, endorsed: &Endorsed, wallet: &WalletId, scheme: Scheme) -> Result<KeygenResult, ClientError> {
        let statement = self.check(endorsed, |s| {
            let record = s.record().ok_or_else(|| refused("a wallet record that is not a keygen's or a reshare's"))?;
            let mut committee = record.committee.clone();
            committee.sort();
            committee.dedup();
            if committee.len() != record.committee.len() || committee.len() < 2 || record.threshold == 0 || usize::from(record.threshold) > committee.len() {
                return Err(refused(format!("a record with committee {:?} and threshold {}", record.committee, record.threshold)));
            }
            Ok(record.committee.clone())
        })?;
        let record = statement.record().cloned().expect("checked above");
        if record.wallet != *wallet || record.scheme != scheme {
            return Err(refused(format!("asked for {wallet} ({scheme}), got the record of {} ({})", record.wallet, record.scheme)));
        }
        Ok(record)
    }

    /// The result of our keygen or reshare request `body`: a record
    /// (checked as [`Roster::record`]) stated for exactly that request.
    pub fn key_result(&self, endorsed: &Endorsed, body: &str, wallet: &WalletId, scheme: Scheme) -> Result<(Completed, KeygenResult), ClientError> {
        let record = self.record(endorsed, wallet, scheme)?;
        let statement = endorsed.parse().expect("checked by record");
        answers(&statement, body)?;
        Ok((statement.result, record))
    }

    /// The result of our sign request `body`: stated for exactly that
    /// request, signed by signers of the session only, at least one. The
    /// signature itself is checked against the wallet's verified key
    /// (`crate::verify::check`).
    pub fn sign_result(&self, endorsed: &Endorsed, body: &str) -> Result<SignResult, ClientError> {
        let statement = self.check(endorsed, |s| match &s.result {
            Completed::Sign(sig) => {
                let outsider = endorsed.endorsements.iter().find(|e| !sig.signers.contains(&e.node));
                match (endorsed.endorsements.first(), outsider) {
                    (None, _) => Err(refused("a signature result signed by no signer")),
                    (_, Some(e)) => Err(refused(format!("a signature result signed by {}, which did not take part", e.node))),
                    (Some(e), None) => Ok(vec![e.node.clone()]),
                }
            }
            _ => Err(refused("a sign request answered with another kind of result")),
        })?;
        answers(&statement, body)?;
        match statement.result {
            Completed::Sign(sig) => Ok(sig),
            _ => unreachable!("checked above"),
        }
    }
}

/// The statement answers the request whose signed body is `body`.
fn answers(statement: &Statement, body: &str) -> Result<(), ClientError> {
    let hash: [u8; 32] = sha2::Sha256::digest(body.as_bytes()).into();
    if statement.request != hash {
        return Err(refused("the statement answers another request"));
    }
    Ok(())
}

/// The verifier [`NodeSignature::holds`] takes, for a node whose pinned
/// identity key is `identity`: that key, or a run key it certified.
fn pinned(identity: &ed25519_dalek::VerifyingKey) -> impl Fn(Option<&[u8; 32]>, &[u8], &[u8; 64]) -> bool + '_ {
    move |run_key, bytes, signature| {
        let signature = ed25519_dalek::Signature::from_bytes(signature);
        match run_key {
            None => identity.verify_strict(bytes, &signature).is_ok(),
            Some(key) => ed25519_dalek::VerifyingKey::from_bytes(key).is_ok_and(|key| key.verify_strict(bytes, &signature).is_ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_proto::link::Mode;
    use conclave_proto::statement::Endorsement;
    use ed25519_dalek::Signer;

    struct Node {
        id: NodeId,
        key: ed25519_dalek::SigningKey,
    }

    fn nodes(n: u8) -> Vec<Node> {
        (1..=n).map(|i| Node { id: NodeId::new(format!("node-{i}")).unwrap(), key: ed25519_dalek::SigningKey::from_bytes(&[i; 32]) }).collect()
    }

    fn roster(nodes: &[Node]) -> Roster {
        Roster::new(
            nodes
                .iter()
                .map(|n| NodeIdentity { node_id: n.id.clone(), mode: Mode::Dev, sign_key: n.key.verifying_key().to_bytes(), kx_key: [9; 32] })
                .collect(),
        )
        .unwrap()
    }

    const BODY: &str = r#"{"kind":"keygen"}"#;

    #[test]
    fn a_roster_pins_each_node_once_and_at_least_one() {
        let n = nodes(2);
        let identity = |node: &Node| NodeIdentity { node_id: node.id.clone(), mode: Mode::Dev, sign_key: node.key.verifying_key().to_bytes(), kx_key: [9; 32] };
        assert_eq!(Roster::new(vec![identity(&n[0]), identity(&n[0])]).unwrap_err(), RosterError::Duplicate(n[0].id.clone()));
        assert_eq!(Roster::new(vec![]).unwrap_err(), RosterError::Empty);
        // Not a point on the curve: y = 2 has no x.
        let mut bad = identity(&n[1]);
        bad.sign_key = [0; 32];
        bad.sign_key[0] = 2;
        assert_eq!(Roster::new(vec![bad]).unwrap_err(), RosterError::BadKey(n[1].id.clone()));
    }

    fn record(committee: &[Node]) -> KeygenResult {
        KeygenResult {
            wallet: WalletId::new("treasury").unwrap(),
            scheme: Scheme::Eddsa,
            public_key: vec![7; 32],
            xpub: None,
            version: 1,
            threshold: 2,
            committee: committee.iter().map(|n| n.id.clone()).collect(),
        }
    }

    fn endorse(statement: &Statement, by: &[&Node]) -> Endorsed {
        let statement = serde_json::to_string(statement).unwrap();
        let endorsements = by
            .iter()
            .map(|n| Endorsement {
                node: n.id.clone(),
                signature: n.key.sign(&Endorsed::signing_bytes(&statement)).to_bytes(),
                run_key: None,
                audit_head: None,
            })
            .collect();
        Endorsed { statement, endorsements }
    }

    /// `endorsed`'s endorsement by `by` made again by a run key that `by`'s
    /// identity key certified until `not_after_ms`.
    fn by_run_key(endorsed: &mut Endorsed, by: &Node, not_after_ms: u64) {
        let run = ed25519_dalek::SigningKey::from_bytes(&[77; 32]);
        let key = run.verifying_key().to_bytes();
        let signature = by.key.sign(&conclave_proto::run_key::RunKey::signing_bytes(&by.id, &key, not_after_ms)).to_bytes();
        let e = endorsed.endorsements.iter_mut().find(|e| e.node == by.id).unwrap();
        e.signature = run.sign(&Endorsed::signing_bytes(&endorsed.statement)).to_bytes();
        e.run_key = Some(conclave_proto::run_key::RunKey { key, not_after_ms, signature });
    }

    #[test]
    fn a_signature_by_a_run_key_counts_while_its_certificate_by_the_pinned_key_holds() {
        let n = nodes(3);
        let r = roster(&n);
        let (w, s) = (WalletId::new("treasury").unwrap(), Scheme::Eddsa);
        let mut good = endorse(&keygen(record(&n)), &[&n[0], &n[1], &n[2]]);
        by_run_key(&mut good, &n[1], crate::client::now_ms() + 60_000);
        assert_eq!(r.record(&good, &w, s).unwrap(), record(&n));

        let mut expired = good.clone();
        by_run_key(&mut expired, &n[1], crate::client::now_ms() - 2 * conclave_proto::run_key::RUN_KEY_SKEW_MS);
        assert!(matches!(r.record(&expired, &w, s), Err(ClientError::Unauthenticated(m)) if m.contains("node-2's signature does not verify")));

        // A run key certified by another node's key does not speak for node-2.
        let mut borrowed = good.clone();
        let impostor = Node { id: n[1].id.clone(), key: n[0].key.clone() };
        by_run_key(&mut borrowed, &impostor, crate::client::now_ms() + 60_000);
        assert!(matches!(r.record(&borrowed, &w, s), Err(ClientError::Unauthenticated(m)) if m.contains("node-2's signature does not verify")));
    }

    fn keygen(result: KeygenResult) -> Statement {
        Statement { v: 1, request: sha2::Sha256::digest(BODY).into(), result: Completed::Keygen(result) }
    }

    #[test]
    fn a_record_counts_only_with_every_committee_members_signature() {
        let n = nodes(3);
        let r = roster(&n);
        let (w, s) = (WalletId::new("treasury").unwrap(), Scheme::Eddsa);
        let good = endorse(&keygen(record(&n)), &[&n[0], &n[1], &n[2]]);
        assert_eq!(r.record(&good, &w, s).unwrap(), record(&n));
        assert_eq!(r.key_result(&good, BODY, &w, s).unwrap().1, record(&n));

        let two_of_three = endorse(&keygen(record(&n)), &[&n[0], &n[1]]);
        assert!(matches!(r.record(&two_of_three, &w, s), Err(ClientError::Unauthenticated(m)) if m.contains("node-3 did not sign")));

        // A host that swaps in its own key keeps the signatures, which then fail.
        let mut forged = good.clone();
        forged.statement = forged.statement.replace(&"07".repeat(32), &"66".repeat(32));
        assert!(matches!(r.record(&forged, &w, s), Err(ClientError::Unauthenticated(m)) if m.contains("does not verify")));

        // A stranger's key is not the roster's, however well it signs.
        let stranger = Node { id: NodeId::new("node-1").unwrap(), key: ed25519_dalek::SigningKey::from_bytes(&[42; 32]) };
        let mut by_stranger = good.clone();
        by_stranger.endorsements[0] = endorse(&keygen(record(&n)), &[&stranger]).endorsements[0].clone();
        assert!(matches!(r.record(&by_stranger, &w, s), Err(ClientError::Unauthenticated(_))));

        let outsider = Node { id: NodeId::new("node-9").unwrap(), key: ed25519_dalek::SigningKey::from_bytes(&[9; 32]) };
        let with_outsider = endorse(&keygen(record(&n)), &[&n[0], &n[1], &n[2], &outsider]);
        assert!(matches!(r.record(&with_outsider, &w, s), Err(ClientError::Unauthenticated(m)) if m.contains("not in the pinned roster")));

        let mut twice = good.clone();
        twice.endorsements.push(twice.endorsements[0].clone());
        assert!(matches!(r.record(&twice, &w, s), Err(ClientError::Unauthenticated(m)) if m.contains("twice")));

        // A committee of one, signed by that one (a single signer vouching alone).
        let mut lonely = record(&n[..1]);
        lonely.threshold = 1;
        assert!(matches!(r.record(&endorse(&keygen(lonely), &[&n[0]]), &w, s), Err(ClientError::Unauthenticated(_))));

        assert!(matches!(r.record(&good, &WalletId::new("payroll").unwrap(), s), Err(ClientError::Unauthenticated(_))));
        assert!(matches!(r.key_result(&good, r#"{"kind":"other"}"#, &w, s), Err(ClientError::Unauthenticated(m)) if m.contains("another request")));
    }

    #[test]
    fn a_signature_result_counts_only_signed_by_its_signers_for_this_request() {
        let n = nodes(3);
        let r = roster(&n);
        let sig = SignResult {
            wallet: WalletId::new("treasury").unwrap(),
            scheme: Scheme::Eddsa,
            signature: vec![1; 64],
            recovery_id: None,
            public_key: vec![7; 32],
            path: vec![],
            signers: vec![n[0].id.clone(), n[1].id.clone()],
            version: 1,
        };
        let statement = Statement { v: 1, request: sha2::Sha256::digest(BODY).into(), result: Completed::Sign(sig.clone()) };
        assert_eq!(r.sign_result(&endorse(&statement, &[&n[1]]), BODY).unwrap(), sig);
        assert!(r.sign_result(&endorse(&statement, &[]), BODY).is_err());
        assert!(matches!(r.sign_result(&endorse(&statement, &[&n[2]]), BODY), Err(ClientError::Unauthenticated(m)) if m.contains("did not take part")));
        assert!(r.sign_result(&endorse(&statement, &[&n[0]]), "{}").is_err());
        assert!(r.sign_result(&endorse(&keygen(record(&n)), &[&n[0], &n[1], &n[2]]), BODY).is_err());
    }
}

/// The worked example of the README ("Checking the signers' signatures"):
/// the same bytes, so that the documentation cannot drift from the code.
#[cfg(test)]
mod readme_example {
    use super::*;
    use conclave_proto::link::Mode;

    const BODY: &str = r#"{"kind":"keygen","request_id":"k-1","wallet":"treasury","scheme":"eddsa","threshold":2,"committee":["node-1","node-2"],"issued_at_ms":1764000000000}"#;
    const STATEMENT: &str = r#"{"v":1,"request":"REQUEST_HASH","kind":"keygen","wallet":"treasury","scheme":"eddsa","public_key":"3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29","version":1,"threshold":2,"committee":["node-1","node-2"]}"#;

    #[test]
    fn the_readme_worked_example_verifies() {
        let keys: Vec<ed25519_dalek::SigningKey> = [[1u8; 32], [2u8; 32]].iter().map(ed25519_dalek::SigningKey::from_bytes).collect();
        let hash = hex::encode(sha2::Sha256::digest(BODY.as_bytes()));
        let statement = STATEMENT.replace("REQUEST_HASH", &hash);
        let endorsed = Endorsed {
            statement: statement.clone(),
            endorsements: ["node-1", "node-2"]
                .iter()
                .zip(&keys)
                .map(|(n, k)| conclave_proto::statement::Endorsement {
                    node: NodeId::new(*n).unwrap(),
                    signature: ed25519_dalek::Signer::sign(k, &Endorsed::signing_bytes(&statement)).to_bytes(),
                    run_key: None,
                    audit_head: None,
                })
                .collect(),
        };
        let roster = Roster::new(
            ["node-1", "node-2"]
                .iter()
                .zip(&keys)
                .map(|(n, k)| NodeIdentity { node_id: NodeId::new(*n).unwrap(), mode: Mode::Hsm, sign_key: k.verifying_key().to_bytes(), kx_key: [0; 32] })
                .collect(),
        )
        .unwrap();
        let (_, record) = roster.key_result(&endorsed, BODY, &WalletId::new("treasury").unwrap(), Scheme::Eddsa).unwrap();
        assert_eq!(record.version, 1);
        assert_eq!(hash, "afe41e7a9ae4fde2a901c949fe97b65beed69e8de0a120c954c138294e08abc1");
        let public: Vec<String> = keys.iter().map(|k| hex::encode(k.verifying_key().to_bytes())).collect();
        assert_eq!(
            public,
            ["8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c", "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394"]
        );
        assert_eq!(
            hex::encode(endorsed.endorsements[0].signature),
            "642de4c609eaee474a6105d724d7b64f626fdd2f3521f9b9af96b3d3b96915e563c60d55d63f3ab5d7ba6cb5b621701c7042cc9a934918b5252a0530b279f406"
        );
        assert_eq!(
            hex::encode(endorsed.endorsements[1].signature),
            "e7467a69de92a79cb769e50d1bc50c56f2d070ac3e4b14d02226fff1a9cbf8632308c11027cbe6a8d24813c15a2eb3d248e7db5634361d0838ac235d9ebc480f"
        );
    }
}
