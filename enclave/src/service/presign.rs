//! Presignature pools on this signer: making a presignature when a host
//! asks (only within the pool's window, so a host cannot make it compute
//! or store without bound), and taking one, once, for a sign request.

use super::*;
use conclave_proto::link::{PresignPlan, PresignWindow};
use conclave_proto::PoolId;

/// The run id sealed before each presignature record.
const RUN_BYTES: usize = 16;

/// A signature, its recovery id (ECDSA) and the key it verifies under.
pub(super) type Signed = (Vec<u8>, Option<u8>, Vec<u8>);

impl Enclave {
    /// Handles `Presign` to its end, reporting `Presigned` to the host.
    pub(super) async fn presign(self: Arc<Self>, plan: PresignPlan) {
        let pool = PoolId::of(&plan.wallet, plan.scheme, plan.version, &plan.signers, &plan.path);
        let made = self.make_presignature(&plan, pool).await;
        match &made {
            Ok(()) => tracing::info!(request = %plan.request_id, %pool, seq = plan.seq, "presignature made"),
            Err(e) => tracing::warn!(request = %plan.request_id, %pool, seq = plan.seq, code = %e.code, reason = %e.reason, "presignature not made"),
        }
        let window = made.is_err().then(|| self.window(&plan, pool).ok().filter(|w| !w.holds(plan.seq))).flatten();
        self.host.send(FromEnclave::Presigned { request_id: plan.request_id, pool, seq: plan.seq, error: made.err(), window });
    }

    /// The numbers this signer makes for `pool`: at most the pool's size
    /// of unused presignatures above the floor, never one that exists
    /// already.
    fn window(&self, plan: &PresignPlan, pool: PoolId) -> Result<PresignWindow, RequestError> {
        let floor = self.floor(&BlobSlot::Presignatures { wallet: plan.wallet.clone(), pool })?.max(1);
        Ok(PresignWindow { floor, end: floor + self.config.presign_pools.of(&plan.wallet) })
    }

    async fn make_presignature(self: &Arc<Self>, plan: &PresignPlan, pool: PoolId) -> Result<(), RequestError> {
        let bad = |reason: String| RequestError::new(ErrorCode::Malformed, format!("presignature plan: {reason}"));
        let now = crate::now_ms();
        if plan.deadline_ms <= now || plan.deadline_ms > now + policy::MAX_SESSION_MS {
            return Err(bad("deadline out of range".into()));
        }
        if !(policy::MIN_ROUND_TIMEOUT_MS..=policy::MAX_SESSION_MS).contains(&plan.round_timeout_ms) {
            return Err(bad("round timeout out of range".into()));
        }
        policy::planned_in_the_past(plan.planned_ms, now).map_err(bad)?;
        if !self.config.presign_pools.serves(&plan.wallet, &plan.path) || (plan.scheme == Scheme::Eddsa && !plan.path.is_empty()) {
            return Err(RequestError::new(ErrorCode::Unsupported, format!("this signer keeps no presignatures for {} at {:?}", plan.wallet, plan.path)));
        }
        let me = self.keys.node_id();
        if !plan.signers.contains(me) {
            return Err(bad(format!("{me} is not a signer of the set")));
        }
        let share_slot = BlobSlot::Share { wallet: plan.wallet.clone(), scheme: plan.scheme };
        let Some(blob) = self.host.load_version(share_slot.clone(), plan.version).await? else {
            return Err(RequestError::new(
                ErrorCode::UnknownWallet,
                format!("node {me} holds no {} key of {} at version {}", plan.scheme, plan.wallet, plan.version),
            ));
        };
        self.above_floor(&share_slot, blob.version)?;
        let record = ShareRecord::open(self.sealer.as_ref(), me, &share_slot, &blob)?;
        let indexes = set_indexes(&record.public.committee, record.public.threshold, &plan.signers)?;

        let slot = BlobSlot::Presignatures { wallet: plan.wallet.clone(), pool };
        let window = self.window(plan, pool)?;
        if !window.holds(plan.seq) {
            return Err(bad(format!("presignature {} is outside this pool's window {}..{}", plan.seq, window.floor, window.end)));
        }
        if !self.claim(&plan.request_id, 1) {
            return Err(bad(format!("run {} ran here already", plan.request_id)));
        }
        // The run is bound to every field of the plan.
        let session_plan = SessionPlan {
            request_id: plan.request_id.clone(),
            attempt: 1,
            participants: plan.signers.clone(),
            deadline_ms: plan.deadline_ms,
            planned_ms: plan.planned_ms,
            round_timeout_ms: plan.round_timeout_ms,
            purpose: Purpose::Request,
            approvals: Vec::new(),
        };
        let body = sha2::Sha256::digest(serde_json::to_vec(plan).expect("plans serialise")).into();
        let attempt = Attempt { plan: &session_plan, body, deadline: Instant::now() + Duration::from_millis(plan.deadline_ms - now) };
        let spec = attempt.spec(SessionKind::Presign, plan.signers.clone(), plan.version);
        let made = match plan.scheme {
            Scheme::Ecdsa => {
                let aux = self.current_aux(&record.public.committee).await?.ok_or_else(|| {
                    RequestError::new(ErrorCode::AuxInfoStale, format!("node {me} holds no CGGMP24 aux info for the committee of {}", plan.wallet))
                })?;
                let (core, _) = ecdsa::core_share(record.secret.expose())?;
                ecdsa::presign(Seat::take(self, &spec)?.background(), indexes, core, &aux, plan.path.clone()).await?
            }
            Scheme::Eddsa => eddsa::commit_nonces(Seat::take(self, &spec)?.background(), indexes, record.secret.expose()).await?,
        };
        // Sealed after the run it serves (zeros where floors are durable).
        let mut sealed_record = Zeroizing::new(self.presign_run.unwrap_or_default().to_vec());
        sealed_record.extend_from_slice(&made);
        let sealed = self.sealer.seal(&SealContext::blob(me, &slot, plan.seq), &sealed_record).map_err(storage)?;
        // A number made again (an earlier try stopped before every signer
        // stored it) replaces what this signer holds of it: it is unused
        // (at or above the floor), and the set converges on the new one.
        let blob = StoredBlob { version: plan.seq, sealed };
        match self.host.store(slot.clone(), blob.clone()).await {
            Err(crate::link::HostCallError::Refused(conclave_proto::link::StoreError::Exists)) => self.host.replace(slot, blob).await?,
            stored => stored?,
        }
        self.acknowledge_stored(&attempt, SessionKind::PresignAck, &plan.signers, vec![true; plan.signers.len()], plan.seq).await?;
        self.completed(&plan.request_id);
        Ok(())
    }

    /// What a pooled request signs with presignature `seq`: the message
    /// itself (EdDSA) or its hash by this signer (ECDSA);
    /// `presignature_unavailable` for anything else, or a path without a
    /// pool.
    pub(super) fn presigned_payload(&self, req: &SignRequest, seq: u32) -> Result<ToSign, RequestError> {
        let to_sign = match (&req.payload, req.scheme) {
            (SignPayload::Message(m) | SignPayload::Digest(m), Scheme::Eddsa) => ToSign::Message(m.clone()),
            (SignPayload::EthEip1559(_), Scheme::Eddsa) => return Err(unavailable(seq, "an Ethereum transaction is not an EdDSA payload")),
            (payload, Scheme::Ecdsa) => ToSign::Hashed(ecdsa::Hashed::of(payload).ok_or_else(|| unavailable(seq, "a digest never signs with a presignature"))?),
        };
        if !self.config.presign_pools.serves(&req.wallet, &req.path) {
            return Err(unavailable(seq, "no pool is declared for this path"));
        }
        Ok(to_sign)
    }

    /// Signs `to_sign` with presignature `seq` of the signers' pool: spent
    /// (its floor raised, durably) before this signer's partial signature
    /// leaves, so that it never serves twice; `presignature_unavailable` if
    /// it cannot serve, before anything leaves.
    pub(super) async fn sign_presigned(
        self: &Arc<Self>,
        req: &SignRequest,
        record: &ShareRecord,
        signers: &[NodeId],
        presigning: Presigning,
        attempt: &Attempt<'_>,
        spec: &SessionSpec,
    ) -> Result<Signed, RequestError> {
        let Presigning { seq, to_sign, pool: planned, loaded } = presigning;
        let version = record.public.version;
        let unavailable = |why: &str| unavailable(seq, why);
        let me = self.keys.node_id();
        let pool = PoolId::of(&req.wallet, req.scheme, version, signers, &req.path);
        let slot = BlobSlot::Presignatures { wallet: req.wallet.clone(), pool };
        let loaded = if planned == pool {
            loaded
        } else {
            self.spend(&slot, seq, attempt);
            self.host.load_version(slot.clone(), seq).await
        };
        let Some(blob) = loaded? else {
            return Err(unavailable("not held here"));
        };
        let opened = self.sealer.open(&SealContext::blob(me, &slot, seq), &blob.sealed).map_err(storage)?;
        // A floor in memory (nitro) forgets what an earlier run took: only
        // this run's presignatures serve, so none serves twice.
        let (run, made) = opened.split_at(RUN_BYTES.min(opened.len()));
        if run != self.presign_run.unwrap_or_default() {
            return Err(unavailable("made before this signer's last start"));
        }
        let presignature = Zeroizing::new(made.to_vec());
        let signed = match to_sign {
            ToSign::Message(message) => eddsa::sign_committed(Seat::take(self, spec)?, presignature, record.secret.expose(), message, self.tampers_partials)
                .await?
                .map(|(signature, public_key)| (signature, None, public_key)),
            ToSign::Hashed(hashed) => ecdsa::sign_presigned(Seat::take(self, spec)?, presignature, hashed, req.path.clone(), self.tampers_partials)
                .await?
                .map(|out| (out.signature, Some(out.recovery_id), out.public_key)),
        };
        match signed {
            Ok(signed) => Ok(signed),
            Err(ecdsa::PresignedError::BadPartial(j)) => {
                Err(RequestError::new(ErrorCode::ProtocolAbort, format!("{} sent a partial signature that does not match", signers[usize::from(j)]))
                    .blaming(vec![signers[usize::from(j)].clone()]))
            }
            Err(e) => Err(RequestError::new(ErrorCode::ProtocolAbort, format!("presigned signing: {e}"))),
        }
    }
}

/// A pooled request's presignature as the plan named it: spent, and
/// loaded beside the share.
pub(super) struct Presigning {
    pub seq: u32,
    pub to_sign: ToSign,
    /// The pool of the plan's signers as listed.
    pub pool: PoolId,
    pub loaded: Result<Option<StoredBlob>, crate::link::HostCallError>,
}

/// What a presignature signs.
pub(super) enum ToSign {
    /// EdDSA: the bytes themselves.
    Message(Vec<u8>),
    /// ECDSA: what this signer hashed.
    Hashed(ecdsa::Hashed),
}

/// Why presignature `seq` cannot serve.
fn unavailable(seq: u32, why: &str) -> RequestError {
    RequestError::new(ErrorCode::PresignatureUnavailable, format!("presignature {seq}: {why}"))
}

impl Enclave {
    /// Spends presignature `seq` of `slot` for `attempt`: its floor rises
    /// past it while the presignature loads and opens and this signer's
    /// partial is computed, and the partial waits for that at the release
    /// ([`Enclave::durable`]); one used already fails the attempt there,
    /// before anything leaves.
    pub(super) fn spend(self: &Arc<Self>, slot: &BlobSlot, seq: u32, attempt: &Attempt<'_>) {
        let (tx, spent) = Durable::new("the presignature's floor writer");
        self.before_release(&attempt.plan.request_id, attempt.plan.attempt, spent);
        let (enclave, path) = (self.clone(), slot.path());
        tokio::task::spawn_blocking(move || {
            let spent = match enclave.floors.take(&path, seq) {
                Ok(true) => Ok(()),
                Ok(false) => Err(unavailable(seq, "used already")),
                Err(e) => Err(RequestError::new(ErrorCode::Storage, format!("presignature floor: {e}"))),
            };
            if crate::fault::ENABLED && enclave.crashes_after_presignature_taken && spent.is_ok() {
                tracing::warn!("FAULT INJECTION: stopping after taking a presignature, before its partial signature leaves");
                std::process::exit(70);
            }
            let _ = tx.send(spent);
        });
    }
}

/// The keygen indexes of `signers`, which must be exactly `threshold`
/// distinct members of `committee` in committee order.
pub(super) fn set_indexes(committee: &[NodeId], threshold: u16, signers: &[NodeId]) -> Result<Vec<u16>, RequestError> {
    let indexes: Vec<u16> = signers
        .iter()
        .map(|s| committee.iter().position(|c| c == s).map(|i| i as u16))
        .collect::<Option<_>>()
        .ok_or_else(|| RequestError::new(ErrorCode::InvalidSigners, "a signer is not in the committee"))?;
    if indexes.len() != usize::from(threshold) || indexes.windows(2).any(|w| w[0] >= w[1]) {
        return Err(RequestError::new(ErrorCode::InvalidSigners, format!("a set is exactly {threshold} distinct members, in committee order")));
    }
    Ok(indexes)
}
