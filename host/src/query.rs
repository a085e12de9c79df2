//! Answers questions from outside: about the registry (who is registered
//! and ready, a wallet's public record), so that clients need no access to
//! the registry backend itself; and for this node's attestation document,
//! which the host relays from its enclave (it cannot forge one).

use crate::coordinator::Host;
use crate::registry::Bucket;
use conclave_proto::attestation::{attest_subject, AskError, AttestAnswer, AttestQuery, Document};
use conclave_proto::audit::SignedAuditEntry;
use conclave_proto::govern::{govern_subject, AuditPage, GovernAnswer, GovernAsk, GovernQuery, MAX_GOVERN_BYTES};
use conclave_proto::registry::{Answer, Ask, NodeEntry, Query, MAX_ANSWER_BYTES};
use conclave_proto::result::KeygenResult;
use conclave_proto::statement::Endorsed;
use conclave_proto::subjects::{wallet_key, QUERY_SUBJECT};
use conclave_proto::{ErrorCode, RequestError, PROTOCOL_VERSION};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// Most bytes of entries in one audit page (room left for the envelope).
const AUDIT_PAGE_BYTES: usize = MAX_GOVERN_BYTES / 2;

impl Host {
    /// Subscribes to queries. Not as a queue group: a query that NATS
    /// handed to a host that is cut off (the server has not noticed yet)
    /// would go unanswered; every host answers and the first answer wins.
    pub async fn subscribe_queries(&self) -> Result<async_nats::Subscriber, async_nats::SubscribeError> {
        self.nats.client.subscribe(QUERY_SUBJECT).await
    }

    /// Subscribes to requests for this node's attestation document.
    pub async fn subscribe_attestation(&self) -> Result<async_nats::Subscriber, async_nats::SubscribeError> {
        self.nats.client.subscribe(attest_subject(self.me())).await
    }

    /// Relays attestation requests to the enclave for the life of the process.
    pub async fn answer_attestation(self: Arc<Self>, sub: async_nats::Subscriber) {
        self.serve(sub, "an attestation request", |host, payload| async move {
            let result = match AttestQuery::decode(&payload) {
                Ok(query) => match host.link.attest(query.nonce).await {
                    Some(result) => result,
                    None => Err(RequestError::new(ErrorCode::PeerUnavailable, format!("{}'s signer did not answer", host.me()))),
                },
                Err(e) => {
                    host.metrics.inc("conclave_rejected_total", e.code().as_str());
                    Err(RequestError::new(e.code(), e.to_string()))
                }
            };
            Some(AttestAnswer { v: PROTOCOL_VERSION, node_id: host.me().clone(), result })
        })
        .await
    }

    /// Subscribes to governance questions for this node's signer.
    pub async fn subscribe_governance(&self) -> Result<async_nats::Subscriber, async_nats::SubscribeError> {
        self.nats.client.subscribe(govern_subject(self.me())).await
    }

    /// Relays governance questions (policy shown or set) to the enclave for
    /// the life of the process; the signer signs its answers.
    pub async fn answer_governance(self: Arc<Self>, sub: async_nats::Subscriber) {
        self.serve(sub, "a governance question", |host, payload| async move {
            let result = match GovernQuery::decode(&payload) {
                // The trail is in this host's store: its entries are signed.
                Ok(GovernQuery { ask: GovernAsk::AuditLog { from_seq }, .. }) => {
                    let page = AuditPage { v: PROTOCOL_VERSION, node_id: host.me().clone(), result: host.audit_page(from_seq) };
                    return Some(serde_json::to_value(page).expect("serialises"));
                }
                Ok(query) => match host.link.govern(query).await {
                    Some(result) => result,
                    None => Err(RequestError::new(ErrorCode::PeerUnavailable, format!("{}'s signer did not answer", host.me()))),
                },
                Err(e) => {
                    host.metrics.inc("conclave_rejected_total", e.code().as_str());
                    Err(RequestError::new(e.code(), e.to_string()))
                }
            };
            Some(serde_json::to_value(GovernAnswer { v: PROTOCOL_VERSION, node_id: host.me().clone(), result }).expect("serialises"))
        })
        .await
    }

    /// Entries of this node's audit trail from `from_seq` on, in order, as
    /// many as fit in one answer (a gap the signer declared is skipped).
    fn audit_page(&self, from_seq: u64) -> Result<Vec<SignedAuditEntry>, RequestError> {
        let storage = |e: std::io::Error| RequestError::new(ErrorCode::Storage, format!("audit trail: {e}"));
        let mut entries = Vec::new();
        let mut size = 0;
        let from = u32::try_from(from_seq).unwrap_or(u32::MAX);
        self.store
            .audit()
            .read_from(from, &mut |blob| {
                // Entries go out unchecked (the asker checks them); a record
                // that is no entry ends the page, and the asker's check names
                // the gap.
                let Ok(entry) = serde_json::from_slice::<SignedAuditEntry>(&blob.sealed) else { return false };
                size += blob.sealed.len() + 64;
                if size > AUDIT_PAGE_BYTES {
                    return false;
                }
                entries.push(entry);
                true
            })
            .map_err(storage)?;
        Ok(entries)
    }

    /// Answers each request of `sub` in a task of its own (a slow answer,
    /// an enclave call or a registry read, holds up no other), replying
    /// with what `answer` returns, or not at all for `None`.
    pub(crate) async fn serve<A, F, Fut>(self: Arc<Self>, mut sub: async_nats::Subscriber, what: &'static str, answer: F)
    where
        A: serde::Serialize + Send + 'static,
        F: Fn(Arc<Host>, bytes::Bytes) -> Fut,
        Fut: std::future::Future<Output = Option<A>> + Send + 'static,
    {
        while let Some(msg) = sub.next().await {
            let Some(reply) = msg.reply else { continue };
            let (host, answering) = (self.clone(), answer(self.clone(), msg.payload));
            tokio::spawn(async move {
                let Some(answer) = answering.await else {
                    return;
                };
                let payload = serde_json::to_vec(&answer).expect("answers serialise");
                if let Err(e) = host.nats.client.publish(reply, payload.into()).await {
                    tracing::warn!(error = %e, "cannot answer {what}");
                }
            });
        }
    }

    /// Asks `peer`'s host for its signer's document answering `nonce`, for
    /// this node's signer to check (the answer is not trusted here).
    pub(crate) async fn ask_attestation(&self, peer: &conclave_proto::NodeId, nonce: Vec<u8>) -> Result<Document, RequestError> {
        match conclave_proto::attestation::ask(&self.nats.client, peer, nonce, Duration::from_secs(10)).await {
            Ok(document) => Ok(document),
            Err(AskError::Refused(e)) => Err(e),
            Err(e) => Err(RequestError::new(ErrorCode::PeerUnavailable, e.to_string())),
        }
    }

    /// Answers queries for the life of the process.
    pub async fn answer_queries(self: Arc<Self>, sub: async_nats::Subscriber) {
        self.serve(sub, "a query", |host, payload| async move {
            match Query::decode(&payload) {
                Ok(query) => host.answer(query.ask).await,
                Err(e) => {
                    host.metrics.inc("conclave_rejected_total", e.code().as_str());
                    Some(Answer::Error { error: RequestError::new(e.code(), e.to_string()) })
                }
            }
        })
        .await
    }

    /// This node's own copy of a wallet's record (what its signer signed),
    /// read for routing only.
    fn kept(&self, wallet: &conclave_proto::WalletId, scheme: conclave_proto::Scheme) -> Option<(KeygenResult, Endorsed)> {
        let kept: Endorsed = serde_json::from_slice(&self.store.kept_record(wallet, scheme).ok()??).ok()?;
        Some((kept.unverified_record()?, kept))
    }

    /// The answer, or none when this host should leave it to the others.
    async fn answer(&self, ask: Ask) -> Option<Answer> {
        Some(match ask {
            // A view that is not current (this host restarting or cut off)
            // would report healthy peers as gone.
            Ask::Nodes if self.view.ready().is_err() => return None,
            Ask::Nodes => {
                let nodes = self.view.nodes().into_iter().map(|(node_id, record, ready)| NodeEntry { node_id, record, ready }).collect();
                Answer::Nodes { nodes }
            }
            // This node's own copy first: a record its signer signed, which
            // no registry writer can replace. The client checks either.
            Ask::Wallet { wallet, scheme } => match self.kept(&wallet, scheme) {
                Some((_, kept)) => Answer::Wallet { record: Some(kept) },
                None => match self.registry.get(Bucket::Wallets, &wallet_key(&wallet, scheme)).await {
                    Ok(None) => Answer::Wallet { record: None },
                    Ok(Some(entry)) => match serde_json::from_slice(&entry.value) {
                        Ok(record) => Answer::Wallet { record: Some(record) },
                        Err(_) => {
                            Answer::Error { error: RequestError::new(ErrorCode::Internal, format!("the record of wallet {wallet} ({scheme}) is corrupt")) }
                        }
                    },
                    Err(e) => Answer::Error { error: RequestError::new(ErrorCode::Internal, format!("registry: {e}")) },
                },
            },
            Ask::Pending { request_id } => self.pending_answer(&request_id).await,
            Ask::Wallets { scheme, committee } => match self.registry.list(Bucket::Wallets).await {
                Ok(entries) => {
                    let committee = committee.map(|mut c| {
                        c.sort();
                        c
                    });
                    let mut records: Vec<(KeygenResult, Endorsed)> = entries
                        .iter()
                        .filter_map(|(_, value)| {
                            let listed = serde_json::from_slice::<Endorsed>(value).ok()?;
                            let record = listed.unverified_record()?;
                            // This node's own copy where it is as new (an
                            // overwritten record has no newer version here).
                            let kept = self.kept(&record.wallet, record.scheme).filter(|(k, _)| k.version >= record.version);
                            Some(kept.unwrap_or((record, listed)))
                        })
                        .filter(|(r, _)| scheme.is_none_or(|s| r.scheme == s))
                        .filter(|(r, _)| {
                            committee.as_ref().is_none_or(|c| {
                                let mut theirs = r.committee.clone();
                                theirs.sort();
                                theirs == *c
                            })
                        })
                        .collect();
                    records.sort_by(|(a, _), (b, _)| (&a.wallet, a.scheme.as_str()).cmp(&(&b.wallet, b.scheme.as_str())));
                    let records: Vec<Endorsed> = records.into_iter().map(|(_, e)| e).collect();
                    // One answer must fit what a client reads.
                    match serde_json::to_vec(&records).map(|b| b.len()).unwrap_or(usize::MAX) {
                        len if len + 1024 > MAX_ANSWER_BYTES => Answer::Error {
                            error: RequestError::new(ErrorCode::Unsupported, format!("{} wallets do not fit one answer ({len} bytes)", records.len())),
                        },
                        _ => Answer::Wallets { records },
                    }
                }
                Err(e) => Answer::Error { error: RequestError::new(ErrorCode::Internal, format!("registry: {e}")) },
            },
        })
    }
}
