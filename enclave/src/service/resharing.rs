//! Resharing on this signer: who deals and who receives, the rounds, the
//! stored acknowledgements, then commit or retire (SECURITY.md,
//! "Resharing").

use super::*;

impl Enclave {
    /// Moves a wallet's key to a new committee (`crate::reshare`): every
    /// participant that holds the named version deals, every new member
    /// joins, and once all new members have confirmed the same new version,
    /// each stores version + 1: its new share, or (a member that leaves) a
    /// record without one, so that it never signs with the old share again.
    /// Until then nothing is stored and the old version still signs.
    pub(super) async fn reshare(self: &Arc<Self>, req: &ReshareRequest, attempt: &Attempt<'_>) -> Result<KeygenResult, RequestError> {
        let me = self.keys.node_id().clone();
        let slot = BlobSlot::Share { wallet: req.wallet.clone(), scheme: req.scheme };
        let old = match req.committee.contains(&me) {
            // Exactly the version the request names: a newer one stored by a
            // reshare cut before every new member acknowledged is not in force.
            true => {
                let blob = self.host.load_version(slot.clone(), req.version).await?.ok_or_else(|| {
                    RequestError::new(ErrorCode::UnknownWallet, format!("node {me} holds no version {} of {}'s {} key", req.version, req.wallet, req.scheme))
                })?;
                self.above_floor(&slot, blob.version)?;
                let record = ShareRecord::open(self.sealer.as_ref(), &me, &slot, &blob)?;
                let p = &record.public;
                if p.public_key != req.public_key || p.xpub != req.xpub || p.committee != req.committee || p.threshold != req.threshold {
                    return Err(RequestError::new(
                        ErrorCode::KeyMismatch,
                        format!("the request names another key than this node's share of {} (version {})", req.wallet, p.version),
                    ));
                }
                Some(record)
            }
            false => match self.host.load(slot.clone()).await? {
                // What a cut reshare left here, never committed to: replaced.
                Some(blob) if blob.version > req.version && self.floor(&slot)? < blob.version => None,
                Some(blob) => {
                    self.above_floor(&slot, blob.version)?;
                    let record = ShareRecord::open(self.sealer.as_ref(), &me, &slot, &blob)?;
                    // A member that left an earlier version keeps only its record.
                    if record.public.committee.contains(&me) {
                        return Err(RequestError::new(
                            ErrorCode::WalletExists,
                            format!("node {me} already holds version {} of {}", record.public.version, req.wallet),
                        ));
                    }
                    None
                }
                None => None,
            },
        };
        let mut committee = req.new_committee.clone();
        committee.sort();
        let mut parties = attempt.plan.participants.clone();
        parties.sort();
        let roles = reshare::rounds::Roles {
            dealing: parties.iter().map(|p| req.committee.iter().position(|c| c == p).map(|i| i as u16)).collect(),
            joining: parties.iter().map(|p| committee.iter().position(|c| c == p).map(|i| i as u16)).collect(),
        };
        let joining = committee.contains(&me);
        // The new committee's aux info comes first, so that the sealed share
        // signs the moment it is stored.
        if req.scheme == Scheme::Ecdsa && joining {
            self.committee_aux(&committee, attempt, false).await?;
        }
        let spec = attempt.spec(SessionKind::Reshare, parties.clone(), req.version);
        let version = req.version + 1;
        let blame = |e: reshare::rounds::RoundsError| reshare_error(e, &req.committee, &parties);
        let chain_code = match &req.xpub {
            Some(x) => Some(conclave_proto::xpub::Xpub::decode(x).map_err(|e| RequestError::new(ErrorCode::Malformed, format!("xpub: {e}")))?.chain_code),
            None => None,
        };
        let rounds = ReshareSession {
            spec: &spec,
            roles: &roles,
            committee: &committee,
            threshold: req.new_threshold,
            version,
            public_key: &req.public_key,
            chain_code,
            tamper: self.tampers_sub_shares,
        };
        let (secret, xpub) = match req.scheme {
            Scheme::Ecdsa => {
                let share = old.as_ref().map(|r| ecdsa::reshare_source(r.secret.expose())).transpose().map_err(|e| internal_reshare(e.to_string()))?;
                match reshare_rounds(self, rounds, share).await?.map_err(blame)? {
                    reshare::rounds::Reshared::Joined(share) => {
                        let xpub = share.chain_code.map(|chain_code| {
                            conclave_proto::xpub::Xpub {
                                public_key: share.core.shared_public_key.to_bytes(true).as_ref().try_into().expect("a compressed secp256k1 point is 33 bytes"),
                                chain_code,
                            }
                            .encode()
                        });
                        (Some(ecdsa::reshared(share).map_err(|e| internal_reshare(e.to_string()))?), xpub)
                    }
                    reshare::rounds::Reshared::Left => (None, req.xpub.clone()),
                }
            }
            Scheme::Eddsa => {
                let share = old.as_ref().map(|r| eddsa::reshare_source(r.secret.expose())).transpose().map_err(|e| internal_reshare(e.to_string()))?;
                match reshare_rounds(self, rounds, share).await?.map_err(blame)? {
                    reshare::rounds::Reshared::Joined(share) => (Some(eddsa::reshared(share).map_err(|e| internal_reshare(e.to_string()))?), None),
                    reshare::rounds::Reshared::Left => (None, None),
                }
            }
        };
        let public = KeygenResult {
            wallet: req.wallet.clone(),
            scheme: req.scheme,
            public_key: req.public_key.clone(),
            xpub,
            version,
            threshold: req.new_threshold,
            committee,
        };
        // A member that leaves keeps a record of the version that replaced
        // its share, and no share: it cannot sign with the old one again.
        let record = ShareRecord { public, secret: SecretShare::new(secret.unwrap_or_default()) };
        let blob = record.seal(self.sealer.as_ref(), &me, &slot)?;
        // New members store first; the old version stays in force (no floor
        // raised) until every one of them says it stored.
        if joining {
            self.store_uncommitted(&slot, blob.clone()).await?;
            if crate::fault::ENABLED && self.crashes_before_ack {
                tracing::warn!("FAULT INJECTION: stopping after storing the new share, before acknowledging it");
                std::process::exit(70);
            }
        }
        let joins: Vec<bool> = roles.joining.iter().map(Option::is_some).collect();
        self.acknowledge_stored(attempt, SessionKind::ReshareAck, &parties, joins, version).await?;
        // Every new member stored the new version: commit to it, and a
        // member that leaves retires its share.
        if !joining {
            self.store_uncommitted(&slot, blob).await?;
        }
        self.raise_floor(&slot, version)?;
        tracing::info!(wallet = %req.wallet, scheme = %req.scheme, version, joined = joining, "reshared");
        Ok(record.public.clone())
    }

    /// Every party in `parties` (sorted) says, in a broadcast signed by
    /// its identity key, whether it stored `version` (`joins` says who
    /// must have), and this signer waits for all of them
    /// (`reshare::stored`). A party that did not is blamed.
    pub(super) async fn acknowledge_stored(
        self: &Arc<Self>,
        attempt: &Attempt<'_>,
        kind: SessionKind,
        parties: &[NodeId],
        joins: Vec<bool>,
        version: u32,
    ) -> Result<(), RequestError> {
        let ack = attempt.spec(kind, parties.to_vec(), version);
        let i = ack.index_of(self.keys.node_id()).expect("checked by the policy");
        Seat::take(self, &ack)?
            .run(move |party: session::Party<reshare::stored::Msg>| {
                Ok::<_, std::convert::Infallible>(futures::executor::block_on(reshare::stored::run(party, i, &joins, u64::from(version))))
            })
            .await?
            .map_err(|e| {
                let error = RequestError::new(ErrorCode::ProtocolAbort, format!("{kind:?}: {e}"));
                match e {
                    reshare::stored::AckError::NotStored { party } | reshare::stored::AckError::OutOfRole { party } => {
                        error.blaming(vec![parties[usize::from(party)].clone()])
                    }
                    reshare::stored::AckError::Transport(_) => error,
                }
            })
    }

    /// Stores a version this signer has not committed to (its floor is
    /// below it), replacing what a cut reshare left at that version.
    pub(super) async fn store_uncommitted(&self, slot: &BlobSlot, blob: StoredBlob) -> Result<(), RequestError> {
        use crate::link::HostCallError::Refused;
        match self.host.store(slot.clone(), blob.clone()).await {
            Err(Refused(conclave_proto::link::StoreError::Exists)) if self.floor(slot)? < blob.version => Ok(self.host.replace(slot.clone(), blob).await?),
            stored => Ok(stored?),
        }
    }
}

/// The resharing session's inputs that every party shares.
struct ReshareSession<'a> {
    spec: &'a SessionSpec,
    roles: &'a reshare::rounds::Roles,
    committee: &'a [NodeId],
    threshold: u16,
    version: u32,
    /// The request's public key and chain code, for members without a share.
    public_key: &'a [u8],
    chain_code: Option<reshare::ChainCode>,
    /// Fault injection (dev mode): deal sub-shares that do not check.
    tamper: bool,
}

/// Runs the resharing rounds on the session's own thread, like every
/// protocol (`Seat::run`). The outer error is the session's (timeouts,
/// aborts, with their blame); the inner one the protocol's.
async fn reshare_rounds<E: generic_ec::Curve>(
    enclave: &Arc<Enclave>,
    s: ReshareSession<'_>,
    share: Option<reshare::KeyShare<E>>,
) -> Result<Result<reshare::rounds::Reshared<E>, reshare::rounds::RoundsError>, RequestError> {
    use reshare::rounds::OldKeySource;
    let seat = Seat::take(enclave, s.spec)?;
    let i = seat.index();
    let new = reshare::NewCommittee::<E>::new(s.committee.len() as u16, s.threshold).map_err(|e| RequestError::new(ErrorCode::Malformed, e.to_string()))?;
    let old_key = match &share {
        Some(share) => OldKeySource::Own(share.old_key()),
        None => OldKeySource::Dealers {
            public_key: generic_ec::Point::<E>::from_bytes(s.public_key)
                .map_err(|_| RequestError::new(ErrorCode::Malformed, "the request's public key does not decode"))?,
            chain_code: s.chain_code,
        },
    };
    let (roles, committee, version, tamper) = (s.roles.clone(), s.committee.to_vec(), u64::from(s.version), s.tamper);
    seat.run(move |party: session::Party<reshare::rounds::Msg>| {
        let setup = reshare::rounds::Setup { roles: &roles, new: &new, committee: &committee, version, old_key, tamper };
        Ok::<_, std::convert::Infallible>(futures::executor::block_on(reshare::rounds::run(party, i, setup, share.as_ref(), &mut rand_core::OsRng)))
    })
    .await
}

/// A resharing protocol failure as the request's error, blaming the node
/// whose values did not check: a dealer by its index in the old
/// committee, any other party by its index in the session.
fn reshare_error(e: reshare::rounds::RoundsError, old_committee: &[NodeId], parties: &[NodeId]) -> RequestError {
    use reshare::rounds::RoundsError;
    let node = |list: &[NodeId], i: u16| list.get(usize::from(i)).cloned();
    let blamed = match &e {
        RoundsError::Reshare(r) => r.blamed_dealer().and_then(|d| node(old_committee, d)),
        RoundsError::OutOfRole { party, .. } | RoundsError::Confirmation { party } => node(parties, *party),
        RoundsError::Transport(_) => None,
    };
    let error = RequestError::new(ErrorCode::ProtocolAbort, format!("resharing: {e}"));
    match blamed {
        Some(node) => error.blaming(vec![node]),
        None => error,
    }
}

fn internal_reshare(reason: String) -> RequestError {
    RequestError::new(ErrorCode::Internal, format!("resharing: {reason}"))
}
