//! Policies on this signer: the one it enforces (read once through the
//! host and its admin signatures checked again, never below the version
//! floor), a new one (admin quorum, a version above the one held), and the
//! judgement of each sign request by it before any round runs.

use super::*;
use crate::policy::ledger::{self, Ledger};
use crate::policy::rules::{self, Facts, Verdict};
use conclave_proto::audit::AuditEvent;
use conclave_proto::error::ApprovalStatus;
use conclave_proto::govern::{AdminQuorum, Fact, GovernAsk, GovernQuery, Said, Saying};
use conclave_proto::policy::{Ed25519Key, Policy, SignedPolicy};
use conclave_proto::WalletId;

/// A policy this signer checked.
pub(crate) struct Active {
    signed: SignedPolicy,
    policy: Policy,
}

/// The policy state of a signer.
#[derive(Default)]
pub(crate) struct Governance {
    /// `None` until read through the host; then the policy, if any. Held
    /// while a policy is read or replaced, so that two never race.
    active: tokio::sync::Mutex<Option<Option<Arc<Active>>>>,
    /// One lock per wallet's ledger: its read, count and write are one step.
    ledgers: Mutex<HashMap<WalletId, Arc<tokio::sync::Mutex<()>>>>,
}

/// What the policy decided for a request that may run.
#[derive(Debug, Default)]
pub(super) struct Judged {
    /// The allowing rule, if a rule decided.
    pub rule: Option<String>,
    /// The request is in the wallet's ledger, which (not this run's memory)
    /// keeps it from running twice across a restart.
    pub recorded: bool,
}

impl Enclave {
    /// Answers a governance question, signed over the asker's nonce.
    pub(super) async fn govern(self: &Arc<Self>, query: GovernQuery) -> Result<Said, RequestError> {
        let fact = match query.ask {
            GovernAsk::Policy => self.policy_fact(self.policy().await?),
            GovernAsk::SetPolicy { policy } => self.policy_fact(Some(self.set_policy(policy).await?)),
            GovernAsk::AuditHead => Fact::AuditHead { head: self.audit_head(query.nonce).await? },
            // The host answers this from its store.
            GovernAsk::AuditLog { .. } => return Err(RequestError::new(ErrorCode::Unsupported, "audit entries are read from the host's store")),
        };
        let saying = Saying { v: conclave_proto::PROTOCOL_VERSION, node: self.keys.node_id().clone(), nonce: query.nonce, fact };
        let saying = serde_json::to_string(&saying).expect("sayings serialise");
        let signature =
            self.keys.sign(&Said::signing_bytes(&saying)).map_err(|e| RequestError::new(ErrorCode::Internal, format!("cannot sign the answer: {e}")))?;
        Ok(Said { saying, signature: signature.signature, run_key: signature.run_key })
    }

    fn policy_fact(&self, active: Option<Arc<Active>>) -> Fact {
        let admins =
            self.config.admins.as_ref().map(|a| AdminQuorum { threshold: a.threshold, keys: a.keys.iter().map(|k| Ed25519Key(k.to_bytes())).collect() });
        Fact::Policy { admins, policy: active.map(|a| a.signed.clone()) }
    }

    /// The policy this signer enforces: read through the host the first
    /// time, and refused if the host serves one below the floor, none
    /// where the floor says there is one, or one the admins did not sign.
    pub(super) async fn policy(&self) -> Result<Option<Arc<Active>>, RequestError> {
        let mut active = self.governance.active.lock().await;
        self.known_policy(&mut active).await
    }

    /// The policy held under the lock `active`, read the first time.
    async fn known_policy(&self, active: &mut Option<Option<Arc<Active>>>) -> Result<Option<Arc<Active>>, RequestError> {
        if let Some(known) = active.as_ref() {
            return Ok(known.clone());
        }
        let floor = self.floor(&BlobSlot::Policy)?;
        let loaded = match self.host.load(BlobSlot::Policy).await? {
            None if floor == 0 => None,
            None => return Err(RequestError::new(ErrorCode::Storage, format!("the host serves no policy; this signer holds version {floor}"))),
            Some(blob) => {
                self.above_floor(&BlobSlot::Policy, blob.version)?;
                Some(Arc::new(self.stored_policy(&blob)?))
            }
        };
        *active = Some(loaded.clone());
        Ok(loaded)
    }

    /// A stored policy, checked: the admins signed it, and it is stored as
    /// its version. (`conclave-host restore` checks a backup's with this.)
    pub(super) fn stored_policy(&self, blob: &StoredBlob) -> Result<Active, RequestError> {
        let signed: SignedPolicy =
            serde_json::from_slice(&blob.sealed).map_err(|e| RequestError::new(ErrorCode::Storage, format!("the stored policy does not decode: {e}")))?;
        let policy = signed.parse()?;
        self.admins_signed(&signed)?;
        if policy.version != blob.version {
            return Err(RequestError::new(ErrorCode::Storage, format!("policy version {} stored as version {}", policy.version, blob.version)));
        }
        Ok(Active { signed, policy })
    }

    /// Takes a new policy: signed by the admin quorum, of a version above
    /// the one held; stored through the host, then the floor raised, so no
    /// host serves the old one again. A refusal changes nothing.
    async fn set_policy(self: &Arc<Self>, signed: SignedPolicy) -> Result<Arc<Active>, RequestError> {
        let set = self.take_policy(signed.clone()).await;
        if let Err(e) = &set {
            // Refusals of a document that parses are decisions worth a record.
            if let Ok(policy) = signed.parse() {
                let digest = sha2::Sha256::digest(signed.document.as_bytes()).into();
                self.audit_after(AuditEvent::PolicyRefused { version: u64::from(policy.version), digest, reason: e.code.as_str().to_string() });
            }
        }
        set
    }

    async fn take_policy(self: &Arc<Self>, signed: SignedPolicy) -> Result<Arc<Active>, RequestError> {
        conclave_proto::codec::check_version("signed policy", signed.v)?;
        let policy = signed.parse()?;
        let admins = self.admins_signed(&signed)?;
        let mut active = self.governance.active.lock().await;
        let held = self.known_policy(&mut active).await?.map_or(0, |a| a.policy.version);
        if policy.version <= held {
            return Err(RequestError::new(
                ErrorCode::VersionMismatch,
                format!("policy version {} is not above version {held}, which this signer holds", policy.version),
            ));
        }
        let blob = StoredBlob { version: policy.version, sealed: serde_json::to_vec(&signed).expect("policies serialise") };
        // A version stored by an earlier try that never raised the floor
        // is this signer's to replace.
        self.host.replace(BlobSlot::Policy, blob).await?;
        self.raise_floor(&BlobSlot::Policy, policy.version)?;
        tracing::info!(from = held, to = policy.version, admins = admins.len(), "policy changed");
        let digest = sha2::Sha256::digest(signed.document.as_bytes()).into();
        let changed = AuditEvent::PolicyChanged {
            from_version: u64::from(held),
            to_version: u64::from(policy.version),
            digest,
            admins: admins.iter().map(|k| k.0).collect(),
        };
        self.audit_after(changed);
        let new = Arc::new(Active { signed, policy });
        *active = Some(Some(new.clone()));
        Ok(new)
    }

    /// The admins whose signatures on `signed` verify, if they are at
    /// least the configured quorum.
    fn admins_signed(&self, signed: &SignedPolicy) -> Result<Vec<Ed25519Key>, RequestError> {
        let Some(quorum) = &self.config.admins else {
            return Err(RequestError::new(ErrorCode::Unsupported, format!("{} has no admin quorum configured, so it takes no policy", self.keys.node_id())));
        };
        let bytes = SignedPolicy::signing_bytes(&signed.document);
        let mut counted: Vec<Ed25519Key> = Vec::new();
        for s in &signed.signatures {
            let key = quorum.keys.iter().find(|k| k.to_bytes() == s.admin.0);
            let valid = key.is_some_and(|k| k.verify_strict(&bytes, &ed25519_dalek::Signature::from_bytes(&s.signature)).is_ok());
            if valid && !counted.contains(&s.admin) {
                counted.push(s.admin);
            }
        }
        if counted.len() < usize::from(quorum.threshold) {
            return Err(RequestError::new(
                ErrorCode::Unauthorized,
                format!("{} valid admin signatures on the policy; it takes {} of the {} configured admins", counted.len(), quorum.threshold, quorum.keys.len()),
            ));
        }
        Ok(counted)
    }

    /// Judges a sign request by the policy, before any round: denied,
    /// waiting for approvals, expired, or allowed (and then, under a rule
    /// with requirements, recorded in the wallet's ledger first).
    /// The decision goes to the audit trail first: a request accepted
    /// without its entry stored does not run.
    pub(super) async fn judge(
        self: &Arc<Self>,
        request: &SignedRequest,
        req: &SignRequest,
        attempt: &Attempt<'_>,
        now_ms: u64,
    ) -> Result<Judged, RequestError> {
        let active = self.policy().await?;
        let policy_version = active.as_ref().map_or(0, |a| u64::from(a.policy.version));
        let decided = match active {
            Some(active) => self.decide(&active, request, req, attempt, now_ms).await,
            None => policy::fresh(req.issued_at_ms, self.config.max_request_age, now_ms).map(|()| Judged::default()),
        };
        let (request_hash, initiator) = (attempt.body, request.initiator);
        match &decided {
            Ok(judged) => {
                let event = AuditEvent::Accepted {
                    request: request_hash,
                    request_id: req.request_id.clone(),
                    wallet: req.wallet.clone(),
                    scheme: req.scheme,
                    initiator,
                    rule: judged.rule.clone(),
                    policy_version,
                };
                // Written while the share loads and the rounds before the
                // release run: the signature share waits for it.
                let written = self.audit_soon(event);
                self.before_release(&req.request_id, attempt.plan.attempt, written);
                // The writer was spawned onto this worker, where it waits
                // for this task to yield (no other worker takes it): let it
                // sign the entry and send it to the host now, not after the
                // share and the presignature have opened.
                tokio::task::yield_now().await;
            }
            Err(e) if matches!(e.code, ErrorCode::PolicyDenied | ErrorCode::ApprovalExpired) => {
                let event = AuditEvent::Denied {
                    request: request_hash,
                    request_id: req.request_id.clone(),
                    wallet: req.wallet.clone(),
                    scheme: req.scheme,
                    initiator,
                    rule: e.rule.clone(),
                    code: e.code,
                    policy_version,
                };
                self.audit_after(event);
            }
            Err(_) => {}
        }
        decided
    }

    /// What `active` says of a sign request (see [`Enclave::judge`]).
    async fn decide(
        self: &Arc<Self>,
        active: &Active,
        request: &SignedRequest,
        req: &SignRequest,
        attempt: &Attempt<'_>,
        now_ms: u64,
    ) -> Result<Judged, RequestError> {
        let fresh = || policy::fresh(req.issued_at_ms, self.config.max_request_age, now_ms);
        // Checked by `RequestBody::validate`; decoded again for the rules.
        let transfer = match &req.payload {
            SignPayload::EthEip1559(tx) => {
                Some(conclave_proto::eth::decode_unsigned(tx).map_err(|e| RequestError::new(e.code(), format!("eth_eip1559 payload: {e}")))?)
            }
            _ => None,
        };
        let facts = Facts {
            wallet: &req.wallet,
            initiator: Ed25519Key(request.initiator),
            payload: req.payload.kind(),
            transfer: transfer.as_ref().map(rules::Transfer::from),
            now_ms,
        };
        let rule = match rules::evaluate(&active.policy, &facts) {
            Verdict::Unruled => {
                fresh()?;
                return Ok(Judged::default());
            }
            Verdict::Denied { rule, why } => {
                let denied = RequestError::new(ErrorCode::PolicyDenied, why);
                return Err(match rule {
                    Some(rule) => denied.by_rule(rule),
                    None => denied,
                });
            }
            Verdict::Allowed(rule) => rule,
        };
        let require = &rule.require;
        if let Some(needed) = &require.approvals {
            // A request that waits for approvals lives as long as its window.
            let until_ms = req.issued_at_ms.saturating_add(needed.window_s * 1000);
            if now_ms > until_ms {
                return Err(
                    RequestError::new(ErrorCode::ApprovalExpired, format!("its approval window of {} s passed", needed.window_s)).by_rule(rule.name.clone())
                );
            }
            let approved = crate::policy::approvals::count(&active.policy, needed, &attempt.body, &attempt.plan.approvals);
            if !approved.is_empty() {
                let event = AuditEvent::ApprovalsCounted {
                    request: attempt.body,
                    request_id: req.request_id.clone(),
                    rule: rule.name.clone(),
                    group: needed.group.clone(),
                    approvers: approved.iter().map(|k| k.0).collect(),
                    required: needed.count,
                };
                self.audit(event).await?;
            }
            if approved.len() < usize::from(needed.count) {
                let mut waiting =
                    RequestError::new(ErrorCode::ApprovalRequired, format!("{} of {} approvals from group {:?}", approved.len(), needed.count, needed.group))
                        .by_rule(rule.name.clone());
                waiting.approvals =
                    Some(Box::new(ApprovalStatus { rule: rule.name.clone(), group: needed.group.clone(), required: needed.count, approved, until_ms }));
                return Err(waiting);
            }
        } else {
            fresh()?;
        }
        if require.velocity.is_none() && require.approvals.is_none() {
            return Ok(Judged { rule: Some(rule.name.clone()), recorded: false });
        }
        let amount = transfer.as_ref().map(|tx| conclave_proto::policy::Amount(tx.value));
        let entry = ledger::Entry { request: attempt.body, rule: rule.name.clone(), at_ms: now_ms, amount, run: self.run };
        self.record(&req.wallet, entry, require.velocity.as_ref(), active.policy.memory_ms(), attempt).await.map_err(|e| e.by_rule(rule.name.clone()))?;
        Ok(Judged { rule: Some(rule.name.clone()), recorded: true })
    }

    /// A wallet's ledger as the host serves it, checked against the floor.
    async fn load_ledger(&self, wallet: &WalletId) -> Result<(u32, Ledger), RequestError> {
        let slot = BlobSlot::Ledger { wallet: wallet.clone() };
        let floor = self.floor(&slot)?;
        match self.host.load(slot.clone()).await? {
            None if floor == 0 => Ok((0, Ledger::default())),
            None => Err(RequestError::new(ErrorCode::Storage, format!("the host serves no ledger of {wallet}; this signer holds version {floor}"))),
            Some(blob) => {
                self.above_floor(&slot, blob.version)?;
                let plain = self
                    .sealer
                    .open(&SealContext::blob(self.keys.node_id(), &slot, blob.version), &blob.sealed)
                    .map_err(|e| RequestError::new(ErrorCode::Storage, format!("the ledger of {wallet} does not open: {e}")))?;
                let ledger = serde_json::from_slice(&plain).map_err(|e| RequestError::new(ErrorCode::Storage, format!("the ledger of {wallet}: {e}")))?;
                Ok((blob.version, ledger))
            }
        }
    }

    /// Pools this signer's recent entries of `entry`'s rule with the
    /// other signers of the attempt (`policy::tally`), outside the ledger
    /// lock: two signers each holding their lock while waiting for the
    /// other's tally would wait for each other.
    async fn tally(
        self: &Arc<Self>,
        wallet: &WalletId,
        entry: &ledger::Entry,
        window_s: u64,
        attempt: &Attempt<'_>,
    ) -> Result<Vec<ledger::Entry>, RequestError> {
        let (_, ledger) = self.load_ledger(wallet).await?;
        let since = entry.at_ms.saturating_sub(window_s * 1000);
        let mine: Vec<_> = ledger.entries.into_iter().filter(|e| e.rule == entry.rule && e.at_ms > since && e.request != entry.request).collect();
        let mut parties = attempt.plan.participants.clone();
        parties.sort();
        let spec = attempt.spec(SessionKind::Tally, parties, 0);
        let (i, n) = (spec.index_of(self.keys.node_id()).expect("checked by the policy"), spec.parties.len() as u16);
        let union = Seat::take(self, &spec)?
            .run(move |party: session::Party<crate::policy::tally::Msg>| {
                Ok::<_, std::convert::Infallible>(futures::executor::block_on(crate::policy::tally::run(party, i, n, mine)))
            })
            .await?
            .map_err(|e| RequestError::new(ErrorCode::ProtocolAbort, format!("velocity tally: {e}")))?;
        // The request itself is never taken from a peer: whether it ran
        // here before is this signer's own record.
        Ok(union.into_iter().filter(|e| e.request != entry.request).collect())
    }

    /// Records a request in its wallet's ledger, within the rule's
    /// velocity: sealed, stored as the next version, floor raised, before
    /// the request may run. A request this run recorded already (an
    /// earlier attempt) passes as it is; one an earlier run recorded does
    /// not run again here.
    async fn record(
        self: &Arc<Self>,
        wallet: &WalletId,
        entry: ledger::Entry,
        velocity: Option<&conclave_proto::policy::Velocity>,
        memory_ms: u64,
        attempt: &Attempt<'_>,
    ) -> Result<(), RequestError> {
        let counted = match velocity {
            Some(v) => self.tally(wallet, &entry, v.window_s, attempt).await?,
            None => Vec::new(),
        };
        let lock = self.governance.ledgers.lock().expect("ledgers lock").entry(wallet.clone()).or_default().clone();
        let _held = lock.lock().await;
        let me = self.keys.node_id();
        let (version, mut ledger) = self.load_ledger(wallet).await?;
        match ledger.find(&entry.request) {
            Some(found) if found.run == self.run => return Ok(()),
            Some(_) => {
                return Err(RequestError::new(ErrorCode::PeerUnavailable, format!("{me} let this request through before it restarted, and may have signed it"))
                    .blaming(vec![me.clone()]))
            }
            None => {}
        }
        for e in counted {
            if ledger.find(&e.request).is_none() {
                ledger.entries.push(e);
            }
        }
        ledger.entries.sort_by_key(|e| e.at_ms);
        ledger.prune(entry.at_ms, memory_ms);
        ledger.admit(entry, velocity).map_err(|refusal| RequestError::new(ErrorCode::PolicyDenied, refusal.to_string()))?;
        let slot = BlobSlot::Ledger { wallet: wallet.clone() };
        let next = version + 1;
        let plain = Zeroizing::new(serde_json::to_vec(&ledger).expect("ledgers serialise"));
        let sealed = self
            .sealer
            .seal(&SealContext::blob(me, &slot, next), &plain)
            .map_err(|e| RequestError::new(ErrorCode::Storage, format!("cannot seal the ledger of {wallet}: {e}")))?;
        self.host.replace(slot.clone(), StoredBlob { version: next, sealed }).await?;
        self.raise_floor(&slot, next)
    }
}
