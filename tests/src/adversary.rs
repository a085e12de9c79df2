//! A lying host: anyone who can publish on any NATS subject and write any
//! registry key, as a compromised host or NATS user could. A test double
//! (the issue allows it): it speaks the wire formats of `proto/` and does
//! what an attacker would, so that tests can show the signers and the
//! client refuse it.

use conclave_proto::registry::{Answer, Ask, Query};
use conclave_proto::request::{RequestBody, SignedRequest};
use conclave_proto::result::{Completed, KeygenResult, Outcome, RequestResult};
use conclave_proto::statement::{Endorsed, Endorsement, Statement};
use conclave_proto::subjects::*;
use conclave_proto::{NodeId, Scheme, WalletId, PROTOCOL_VERSION};
use ed25519_dalek::Signer;
use futures::StreamExt;
use sha2::Digest;

/// The attacker's connection to the cluster's NATS.
pub struct Adversary {
    nats: async_nats::Client,
    js: async_nats::jetstream::Context,
    /// The attacker's own key: what it signs its forgeries with.
    key: ed25519_dalek::SigningKey,
}

/// The public key the attacker swaps in for a wallet's: deposits to it
/// would be the attacker's.
pub const ATTACKER_KEY: [u8; 32] = [0x66; 32];

impl Adversary {
    /// Connects to the cluster's NATS as a plain user.
    pub async fn connect(nats_url: &str) -> Adversary {
        // Without echo: what it publishes itself does not come back to its
        // own subscriptions (a replayer would replay its replays).
        let nats = async_nats::ConnectOptions::new().no_echo().connect(nats_url).await.expect("the adversary connects");
        let js = async_nats::jetstream::new(nats.clone());
        Adversary { nats, js, key: ed25519_dalek::SigningKey::from_bytes(&[0x66; 32]) }
    }

    /// A wallet record that names `record`'s wallet and committee but the
    /// attacker's key, "signed" by every committee member with the
    /// attacker's own key (it has no signer's).
    pub fn forged_record(&self, record: &KeygenResult, request: [u8; 32]) -> Endorsed {
        let forged = KeygenResult { public_key: ATTACKER_KEY.to_vec(), xpub: None, ..record.clone() };
        self.endorse(Statement { v: PROTOCOL_VERSION, request, result: Completed::Keygen(forged) }, &record.committee)
    }

    fn endorse(&self, statement: Statement, as_nodes: &[NodeId]) -> Endorsed {
        let statement = serde_json::to_string(&statement).expect("serialises");
        let signature = self.key.sign(&Endorsed::signing_bytes(&statement)).to_bytes();
        Endorsed {
            statement,
            endorsements: as_nodes.iter().map(|node| Endorsement { node: node.clone(), signature, run_key: None, audit_head: None }).collect(),
        }
    }

    /// Answers the next keygen request it sees with a forged result, before
    /// the signers can: for the request's own id (so it takes the result
    /// stream's slot), its own body hash, its wallet and committee, and the
    /// attacker's key. Returns when it has published one.
    pub async fn forge_next_keygen_result(&self) -> tokio::task::JoinHandle<()> {
        let mut requests = self.nats.subscribe(KEYGEN_SUBJECT).await.expect("subscribe to requests");
        self.nats.flush().await.expect("flush");
        let (js, forger) = (self.js.clone(), Adversary { nats: self.nats.clone(), js: self.js.clone(), key: self.key.clone() });
        tokio::spawn(async move {
            let msg = requests.next().await.expect("a keygen request");
            let (signed, body) = SignedRequest::decode(&msg.payload).expect("a well-formed request");
            let RequestBody::Keygen(k) = body else { panic!("not a keygen request") };
            let mut committee = k.committee.clone();
            committee.sort();
            let claimed = KeygenResult { wallet: k.wallet, scheme: k.scheme, public_key: vec![], xpub: None, version: 1, threshold: k.threshold, committee };
            let endorsed = forger.forged_record(&claimed, sha2::Sha256::digest(signed.body.as_bytes()).into());
            let result = RequestResult {
                v: PROTOCOL_VERSION,
                request_id: k.request_id.clone(),
                reported_by: claimed.committee[0].clone(),
                outcome: Outcome::Ok { result: endorsed },
            };
            let publish = async_nats::jetstream::message::PublishMessage::build()
                .payload(serde_json::to_vec(&result).expect("serialises").into())
                .message_id(result_msg_id(&k.request_id));
            js.send_publish(result_subject(&k.request_id), publish).await.expect("publish").await.expect("stored first");
        })
    }

    /// A wallet's record as the registry holds it now (NATS KV): what a
    /// host keeps to serve again later.
    pub async fn wallet_record(&self, wallet: &WalletId, scheme: Scheme) -> Endorsed {
        let kv = self.js.get_key_value(WALLETS_BUCKET).await.expect("wallets bucket");
        let bytes = kv.get(wallet_key(wallet, scheme)).await.expect("read").expect("the wallet has a record");
        serde_json::from_slice(&bytes).expect("a record")
    }

    /// A presignature pool's counters as the registry holds them (NATS KV).
    pub async fn pool_record(&self, pool: &conclave_proto::PoolId) -> conclave_proto::registry::PoolRecord {
        let kv = self.js.get_key_value(conclave_proto::subjects::POOLS_BUCKET).await.expect("pools bucket");
        kv.get(pool.to_string()).await.expect("read").map(|b| serde_json::from_slice(&b).expect("a pool record")).unwrap_or_default()
    }

    /// Overwrites a presignature pool's counters (NATS KV), as a lying
    /// registry would, to hand out presignatures again.
    pub async fn set_pool_record(&self, pool: &conclave_proto::PoolId, record: conclave_proto::registry::PoolRecord) {
        let kv = self.js.get_key_value(conclave_proto::subjects::POOLS_BUCKET).await.expect("pools bucket");
        kv.put(pool.to_string(), serde_json::to_vec(&record).expect("serialises").into()).await.expect("overwrite");
    }

    /// Overwrites a wallet's record in the registry (NATS KV).
    pub async fn overwrite_wallet_record(&self, wallet: &WalletId, scheme: Scheme, record: &Endorsed) {
        let kv = self.js.get_key_value(WALLETS_BUCKET).await.expect("wallets bucket");
        kv.put(wallet_key(wallet, scheme), serde_json::to_vec(record).expect("serialises").into()).await.expect("overwrite");
    }

    /// Answers every wallet query from now on, at once, with `record`
    /// (until the returned task is aborted).
    pub async fn answer_wallet_queries_with(&self, record: Endorsed) -> tokio::task::JoinHandle<()> {
        let mut queries = self.nats.subscribe(QUERY_SUBJECT).await.expect("subscribe to queries");
        self.nats.flush().await.expect("flush");
        let nats = self.nats.clone();
        tokio::spawn(async move {
            while let Some(msg) = queries.next().await {
                let (Some(reply), Ok(Query { ask: Ask::Wallet { .. }, .. })) = (msg.reply, Query::decode(&msg.payload)) else {
                    continue;
                };
                let answer = serde_json::to_vec(&Answer::Wallet { record: Some(record.clone()) }).expect("serialises");
                let _ = nats.publish(reply, answer.into()).await;
            }
        })
    }

    /// Republishes every envelope sent to `to` on its subject `copies`
    /// more times, unchanged, as a host replaying traffic would (until the
    /// returned task is aborted).
    pub async fn replay_envelopes_to(&self, to: &NodeId, copies: usize) -> tokio::task::JoinHandle<()> {
        let mut envelopes = self.nats.subscribe(p2p_inbox(to)).await.expect("subscribe to envelopes");
        self.nats.flush().await.expect("flush");
        let nats = self.nats.clone();
        tokio::spawn(async move {
            while let Some(msg) = envelopes.next().await {
                for _ in 0..copies {
                    let _ = nats.publish(msg.subject.clone(), msg.payload.clone()).await;
                }
            }
        })
    }
}
