//! Keygen on this signer: the committee's aux info first (ECDSA), then
//! the protocol, then the sealed share.

use super::*;

impl Enclave {
    pub(super) async fn keygen(self: &Arc<Self>, req: &KeygenRequest, attempt: &Attempt<'_>) -> Result<KeygenResult, RequestError> {
        let mut committee = req.committee.clone();
        committee.sort();
        let slot = BlobSlot::Share { wallet: req.wallet.clone(), scheme: req.scheme };
        if self.host.load(slot.clone()).await?.is_some() {
            return Err(RequestError::new(ErrorCode::WalletExists, format!("{} already has an {} key", req.wallet, req.scheme)));
        }
        let spec = attempt.spec(SessionKind::Keygen, committee.clone(), 0);
        let (public_key, xpub, secret) = match req.scheme {
            Scheme::Ecdsa => {
                // The committee's aux info first, so that the new key signs
                // at once.
                self.committee_aux(&committee, attempt, false).await?;
                let out = ecdsa::keygen(Seat::take(self, &spec)?, req.threshold).await?;
                (out.public_key, Some(out.xpub), out.share)
            }
            Scheme::Eddsa => {
                let out = eddsa::keygen(Seat::take(self, &spec)?, req.threshold).await?;
                (out.public_key, None, out.share)
            }
        };
        let public = KeygenResult { wallet: req.wallet.clone(), scheme: req.scheme, public_key, xpub, version: 1, threshold: req.threshold, committee };
        let record = ShareRecord { public, secret: SecretShare::new(secret) };
        let blob = record.seal(self.sealer.as_ref(), self.keys.node_id(), &slot)?;
        self.host.store(slot.clone(), blob).await.map_err(|e| match e {
            crate::link::HostCallError::Refused(conclave_proto::link::StoreError::Exists) => {
                RequestError::new(ErrorCode::WalletExists, format!("{} already has an {} key", req.wallet, req.scheme))
            }
            other => other.into(),
        })?;
        self.raise_floor(&slot, 1)?;
        Ok(record.public.clone())
    }

    /// The committee's aux info of this release, if this signer holds it
    /// (none for a new committee, nor for one whose aux info the CGGMP21
    /// release made).
    pub(super) async fn current_aux(&self, committee: &[NodeId]) -> Result<Option<Zeroizing<Vec<u8>>>, RequestError> {
        let slot = BlobSlot::AuxInfo { committee: CommitteeId::of(committee) };
        let Some(blob) = self.host.load(slot.clone()).await? else { return Ok(None) };
        self.above_floor(&slot, blob.version)?;
        let aux = self.sealer.open(&SealContext::blob(self.keys.node_id(), &slot, blob.version), &blob.sealed).map_err(storage)?;
        Ok(ecdsa::aux_is_current(&aux, committee.len()).then_some(aux))
    }

    /// The committee's aux info: the one held, or (whichever request asks
    /// first, or always when `renew`) made now by the whole committee and
    /// stored as the slot's next version.
    pub(super) async fn committee_aux(self: &Arc<Self>, committee: &[NodeId], attempt: &Attempt<'_>, renew: bool) -> Result<Zeroizing<Vec<u8>>, RequestError> {
        let id = CommitteeId::of(committee);
        let slot = BlobSlot::AuxInfo { committee: id };
        let lock = self.aux_locks.lock().expect("aux lock").entry(id).or_default().clone();
        let _guard = lock.lock().await;
        if !renew {
            if let Some(aux) = self.current_aux(committee).await? {
                return Ok(aux);
            }
        }
        tracing::info!(committee = %id, renew, "generating the committee's aux info");
        let spec = attempt.spec(SessionKind::AuxInfo, committee.to_vec(), 0);
        // Peers whose primes are ready first start at once: their messages
        // must wait here for as long as this node's primes take.
        let inbox = self.inbox(&spec)?;
        let primes = PrimePool::take(self).await.map_err(floor_error)?;
        let aux = ecdsa::aux_info(Seat::take(self, &spec)?, inbox, primes).await?;
        let held = self.host.load(slot.clone()).await?.map(|b| b.version);
        let version = held.unwrap_or(0).max(self.floor(&slot)?) + 1;
        let sealed = self.sealer.seal(&SealContext::blob(self.keys.node_id(), &slot, version), &aux).map_err(storage)?;
        self.host.store(slot.clone(), StoredBlob { version, sealed }).await?;
        // The aux info it replaces is never served again.
        self.raise_floor(&slot, version)?;
        Ok(aux)
    }
}
