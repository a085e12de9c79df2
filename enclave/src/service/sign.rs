//! Signing on this signer: the checked key version, the signers in keygen
//! order, then the protocol under the fencing of `Enclave::release`.

use super::presign::Presigning;
use super::*;
use conclave_proto::PoolId;

impl Enclave {
    /// `blobs` came with the attempt from the host: what it expects to be
    /// loaded (see [`Enclave::load_given`]).
    pub(super) async fn sign(self: &Arc<Self>, req: &SignRequest, attempt: &Attempt<'_>, mut blobs: Vec<SlotBlob>) -> Result<SignResult, RequestError> {
        let slot = BlobSlot::Share { wallet: req.wallet.clone(), scheme: req.scheme };
        // A pooled request that can use its presignature spends it at once
        // and loads it beside the share, from the pool of the plan's
        // signers as listed (hosts list them in committee order;
        // `sign_presigned` spends and loads again if the share says
        // otherwise): the floor's write is then under way while the share
        // loads and opens.
        let presigned = match attempt.plan.purpose {
            Purpose::Presigned { seq } => {
                let to_sign = self.presigned_payload(req, seq)?;
                let pool = PoolId::of(&req.wallet, req.scheme, req.version, &attempt.plan.participants, &req.path);
                let pool_slot = BlobSlot::Presignatures { wallet: req.wallet.clone(), pool };
                self.spend(&pool_slot, seq, attempt);
                Some((seq, to_sign, pool, pool_slot))
            }
            _ => None,
        };
        let given_presignature = presigned.as_ref().and_then(|(seq, _, _, pool_slot)| given(&mut blobs, pool_slot, *seq));
        let prefetch = async {
            match presigned {
                Some((seq, to_sign, pool, pool_slot)) => {
                    Some(Presigning { seq, to_sign, pool, loaded: self.load_given(given_presignature, pool_slot, seq).await })
                }
                None => None,
            }
        };
        // Exactly the version the request names (the initiator read it from
        // the committee's signed record), and none this signer replaced.
        let given_share = given(&mut blobs, &slot, req.version);
        let (share, prefetched) = tokio::join!(self.load_given(given_share, slot.clone(), req.version), prefetch);
        let blob = match share? {
            Some(blob) => blob,
            None => {
                let held = self.host.load(slot.clone()).await?.map(|b| b.version);
                return Err(match held {
                    Some(held) => RequestError::new(
                        ErrorCode::VersionMismatch,
                        format!("the request names version {} of {}, node {} holds version {held}", req.version, req.wallet, self.keys.node_id()),
                    ),
                    None => RequestError::new(ErrorCode::UnknownWallet, format!("node {} holds no {} key for {}", self.keys.node_id(), req.scheme, req.wallet)),
                });
            }
        };
        self.above_floor(&slot, blob.version)?;
        let record = ShareRecord::open(self.sealer.as_ref(), self.keys.node_id(), &slot, &blob)?;
        let committee = &record.public.committee;
        if let Purpose::RenewAux { .. } = attempt.plan.purpose {
            return Err(self.renew_aux(&record, attempt).await);
        }
        // Signers in keygen-index order: a signer's index in the session is
        // its position here, and `indexes` maps it back to keygen.
        let mut indexes = Vec::with_capacity(attempt.plan.participants.len());
        for p in &attempt.plan.participants {
            let i = committee
                .iter()
                .position(|c| c == p)
                .ok_or_else(|| RequestError::new(ErrorCode::InvalidSigners, format!("{p} is not in the committee of {}", req.wallet)))?;
            indexes.push(i as u16);
        }
        indexes.sort();
        if indexes.len() != usize::from(record.public.threshold) {
            return Err(RequestError::new(
                ErrorCode::InvalidSigners,
                format!("{} signers planned, the key needs exactly {}", indexes.len(), record.public.threshold),
            ));
        }
        let signers: Vec<NodeId> = indexes.iter().map(|&i| committee[usize::from(i)].clone()).collect();
        let spec = attempt.spec(SessionKind::Sign, signers.clone(), record.public.version);
        let (signature, recovery_id, public_key) = match (&attempt.plan.purpose, req.scheme) {
            (Purpose::Presigned { .. }, _) => {
                let presigning = prefetched.expect("a presigned plan spends and loads first");
                self.sign_presigned(req, &record, &signers, presigning, attempt, &spec).await?
            }
            (_, Scheme::Ecdsa) => {
                let out = self.sign_full(req, &slot, &record, indexes, &spec).await?;
                (out.signature, Some(out.recovery_id), out.public_key)
            }
            (_, Scheme::Eddsa) => {
                if !req.path.is_empty() {
                    return Err(RequestError::new(ErrorCode::Unsupported, "derivation paths are available for ECDSA wallets only"));
                }
                let message = match &req.payload {
                    SignPayload::Digest(m) | SignPayload::Message(m) => m.clone(),
                    SignPayload::EthEip1559(_) => unreachable!("refused for EdDSA by RequestBody::validate"),
                };
                let (signature, public_key) = eddsa::sign(Seat::take(self, &spec)?, indexes, record.secret.expose(), message).await?;
                (signature, None, public_key)
            }
        };
        Ok(SignResult {
            wallet: req.wallet.clone(),
            scheme: req.scheme,
            signature,
            recovery_id,
            public_key,
            path: req.path.clone(),
            signers,
            version: record.public.version,
        })
    }
}

/// The blob of `slot` at `version` among those the host sent with the
/// attempt, taken out.
fn given(blobs: &mut Vec<SlotBlob>, slot: &BlobSlot, version: u32) -> Option<StoredBlob> {
    let i = blobs.iter().position(|b| b.slot == *slot && b.blob.version == version)?;
    Some(blobs.swap_remove(i).blob)
}

impl Enclave {
    /// Version `version` of `slot`: the blob the host sent with the attempt,
    /// else asked for. Either way only what the host says; the caller checks
    /// it (floor, seal) as it would any blob loaded.
    async fn load_given(&self, given: Option<StoredBlob>, slot: BlobSlot, version: u32) -> Result<Option<StoredBlob>, crate::link::HostCallError> {
        match given {
            Some(blob) => Ok(Some(blob)),
            None => self.host.load_version(slot, version).await,
        }
    }

    /// ECDSA by the full interactive protocol: the core share joined with
    /// the committee's aux info (a CGGMP21 share is sealed again first).
    async fn sign_full(
        self: &Arc<Self>,
        req: &SignRequest,
        slot: &BlobSlot,
        record: &ShareRecord,
        indexes: Vec<u16>,
        spec: &SessionSpec,
    ) -> Result<ecdsa::SignOutput, RequestError> {
        let digest: [u8; 32] = match (ecdsa::Hashed::of(&req.payload), &req.payload) {
            (Some(hashed), _) => hashed.digest(),
            (None, SignPayload::Digest(d)) => d.as_slice().try_into().expect("validated to 32 bytes"),
            (None, _) => unreachable!("only a digest is not hashed here"),
        };
        let aux = self.current_aux(&record.public.committee).await?.ok_or_else(|| {
            RequestError::new(ErrorCode::AuxInfoStale, format!("node {} holds no CGGMP24 aux info for the committee of {}", self.keys.node_id(), req.wallet))
        })?;
        let (core, legacy) = ecdsa::core_share(record.secret.expose())?;
        if legacy {
            self.reseal_core(slot, record, &core).await;
        }
        ecdsa::sign(Seat::take(self, spec)?, indexes, core, &aux, digest, req.path.clone()).await
    }

    /// The attempt of a whole ECDSA committee that makes its aux info
    /// again; answers `aux_info_renewed` (the next attempt signs) or why not.
    async fn renew_aux(self: &Arc<Self>, record: &ShareRecord, attempt: &Attempt<'_>) -> RequestError {
        let mut committee = record.public.committee.clone();
        committee.sort();
        let mut participants = attempt.plan.participants.clone();
        participants.sort();
        if record.public.scheme != Scheme::Ecdsa || participants != committee {
            return RequestError::new(ErrorCode::InvalidSigners, "renewing aux info takes an ECDSA wallet's whole committee");
        }
        // Every member stores its new aux info before any says it is done:
        // else the signing attempt that follows could reach a member still
        // storing. Members may hold the slot at different versions (one that
        // lost an earlier renewal's store), so the step binds none (0).
        let renewed = async {
            self.committee_aux(&committee, attempt, true).await?;
            self.acknowledge_stored(attempt, SessionKind::AuxAck, &committee, vec![true; committee.len()], 0).await
        };
        match renewed.await {
            Ok(()) => RequestError::new(ErrorCode::AuxInfoRenewed, format!("the committee of {} has new aux info", record.public.wallet)),
            Err(e) => e,
        }
    }

    /// Seals a CGGMP21-format share again as its core share alone (same
    /// version): the old aux info in it is never read again. Best effort:
    /// the share signs either way, and the next signature tries again.
    async fn reseal_core(&self, slot: &BlobSlot, record: &ShareRecord, core: &ecdsa::CoreShare) {
        let resealed = ShareRecord { public: record.public.clone(), secret: SecretShare::new(ecdsa::encode_core(core)) };
        let stored = match resealed.seal(self.sealer.as_ref(), self.keys.node_id(), slot) {
            Ok(blob) => self.host.replace(slot.clone(), blob).await.map_err(RequestError::from),
            Err(e) => Err(e),
        };
        match stored {
            Ok(()) => tracing::info!(wallet = %record.public.wallet, version = record.public.version, "sealed a CGGMP21 share again as a CGGMP24 core share"),
            Err(e) => tracing::warn!(wallet = %record.public.wallet, error = %e, "could not seal the CGGMP21 share again; it still signs"),
        }
    }
}
