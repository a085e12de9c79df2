//! The ECDSA engine: CGGMP24 on secp256k1 (crate `cggmp24`).
//!
//! This is the only module that names `cggmp24`. Everything here takes and
//! returns serialised shares and plain bytes, so callers never see a
//! cggmp24 type.
//!
//! A stored ECDSA share is the core key share alone; the committee's aux
//! info (Paillier and ring-Pedersen keys) is sealed once per committee and
//! joined with the core share when a session starts. The CGGMP21 release
//! stored core share and aux info together: its core share has the same
//! format and is read as is ([`core_share`]); its aux info is not (CGGMP24
//! proves more about each party's moduli and keeps four primes per party),
//! so a committee's aux info is made again, once.

use crate::reshare::{self, ReshareError};
use crate::session::{self, Party, Seat};
use cggmp24::generic_ec::{NonZero, Point, Scalar};
use cggmp24::hd_wallet::Slip10;
use cggmp24::key_share::{AuxInfo, DirtyIncompleteKeyShare, IncompleteKeyShare, Validate};
use cggmp24::security_level::SecurityLevel128;
use cggmp24::supported_curves::Secp256k1;
use cggmp24::{ExecutionId, KeyShare, PrehashedDataToSign};
use conclave_proto::request::SignPayload;
use conclave_proto::{ErrorCode, RequestError};
use zeroize::Zeroizing;

/// Pre-generated safe primes for one party's aux info (four: its Paillier
/// key and its ring-Pedersen modulus).
pub struct Primes(cggmp24::PregeneratedPrimes<SecurityLevel128>);

impl Primes {
    /// Generates a fresh set of four safe primes: tens of seconds to
    /// minutes of CPU.
    pub fn generate() -> Primes {
        Primes(cggmp24::PregeneratedPrimes::generate(&mut rand_core::OsRng))
    }

    /// Serialises for sealing.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(serde_json::to_vec(&self.0).expect("primes serialise"))
    }

    /// Parses what [`Primes::to_bytes`] produced; `None` for anything else,
    /// the CGGMP21 release's two-prime sets among them.
    pub fn from_bytes(bytes: &[u8]) -> Option<Primes> {
        serde_json::from_slice(bytes).ok().map(Primes)
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> RequestError {
    RequestError::new(ErrorCode::Internal, format!("{what}: {e}"))
}

/// Runs auxiliary info generation for the committee in `spec` with the
/// session's inbox opened before the primes were ready; returns the
/// serialised aux info.
pub async fn aux_info(seat: Seat<'_>, inbox: session::Inbox, primes: Primes) -> Result<Zeroizing<Vec<u8>>, RequestError> {
    let (i, n, eid) = (seat.index(), seat.parties(), seat.execution());
    seat.heavy()
        .run_in(inbox, move |party: Party<cggmp24::key_refresh::Msg<sha2::Sha256, SecurityLevel128>>| {
            futures::executor::block_on(cggmp24::aux_info_gen(ExecutionId::new(&eid), i, n, primes.0).start(&mut rand_core::OsRng, party))
                .map(|aux| Zeroizing::new(serde_json::to_vec(&aux).expect("aux info serialises")))
        })
        .await
}

/// Whether `aux` is aux info of this release for a committee of `n`.
pub fn aux_is_current(aux: &[u8], n: usize) -> bool {
    serde_json::from_slice::<AuxInfo<SecurityLevel128>>(aux).is_ok_and(|aux| aux.pedersen_params.len() == n)
}

/// Public output of keygen.
pub struct KeygenOutput {
    /// 33-byte compressed SEC1 public key.
    pub public_key: Vec<u8>,
    /// BIP-32 serialisation of the key and its chain code.
    pub xpub: String,
    /// The serialised core key share (it signs with the committee's aux
    /// info).
    pub share: Zeroizing<Vec<u8>>,
}

/// Runs threshold keygen (HD-enabled).
pub async fn keygen(seat: Seat<'_>, threshold: u16) -> Result<KeygenOutput, RequestError> {
    let (i, n, eid) = (seat.index(), seat.parties(), seat.execution());
    let core = seat
        .run(move |party: Party<cggmp24::keygen::ThresholdMsg<Secp256k1, SecurityLevel128, sha2::Sha256>>| {
            futures::executor::block_on(
                cggmp24::keygen::<Secp256k1>(ExecutionId::new(&eid), i, n).set_threshold(threshold).hd_wallet(true).start(&mut rand_core::OsRng, party),
            )
        })
        .await?;
    let chain_code = core.chain_code.ok_or_else(|| internal("keygen", "no chain code"))?;
    let public_key: [u8; 33] = core.shared_public_key.to_bytes(true).as_ref().try_into().expect("compressed secp256k1 point");
    Ok(KeygenOutput {
        public_key: public_key.to_vec(),
        xpub: conclave_proto::xpub::Xpub { public_key, chain_code }.encode(),
        share: Zeroizing::new(serde_json::to_vec(&core).expect("key share serialises")),
    })
}

/// A core key share (secret: it has no `Debug`, and zeroizes on drop as
/// cggmp24's secret scalars do).
pub struct CoreShare(IncompleteKeyShare<Secp256k1>);

/// A stored ECDSA share's core key share, and whether it was stored in the
/// CGGMP21 release's format (core share and aux info together: the signer
/// seals it again as the core share alone).
pub fn core_share(stored: &[u8]) -> Result<(CoreShare, bool), RequestError> {
    #[derive(serde::Deserialize)]
    struct WithAux {
        core: DirtyIncompleteKeyShare<Secp256k1>,
    }
    match serde_json::from_slice::<WithAux>(stored) {
        Ok(WithAux { core }) => Ok((CoreShare(core.validate().map_err(|e| internal("sealed share is not valid", e))?), true)),
        Err(_) => Ok((CoreShare(crate::key_shares::decode(stored).map_err(|e| internal("sealed share", e))?), false)),
    }
}

/// The core share in the format this release stores.
pub fn encode_core(core: &CoreShare) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(serde_json::to_vec(&core.0).expect("key share serialises"))
}

fn complete(core: CoreShare, aux: &[u8]) -> Result<KeyShare<Secp256k1>, RequestError> {
    let aux: AuxInfo<SecurityLevel128> = serde_json::from_slice(aux).map_err(|e| internal("stored aux info does not decode", e))?;
    KeyShare::from_parts((core.0, aux)).map_err(|e| internal("key share does not match the committee's aux info", e))
}

/// A message this signer hashes itself (never a digest a client handed
/// over): what a presignature may sign. cggmp24's `DataToSign` is built
/// only by hashing, which is what keeps a digest out.
pub enum Hashed {
    /// SHA-256 of a message.
    Sha256(Vec<u8>),
    /// Keccak-256 of an Ethereum transaction.
    Keccak256(Vec<u8>),
}

impl Hashed {
    /// The payload as the signer hashes it; none for a digest.
    pub fn of(payload: &SignPayload) -> Option<Hashed> {
        match payload {
            SignPayload::Message(m) => Some(Hashed::Sha256(m.clone())),
            SignPayload::EthEip1559(tx) => Some(Hashed::Keccak256(tx.clone())),
            SignPayload::Digest(_) => None,
        }
    }

    /// The 32 bytes signed.
    pub fn digest(&self) -> [u8; 32] {
        use sha3::Digest as _;
        match self {
            Hashed::Sha256(m) => sha2::Sha256::digest(m).into(),
            Hashed::Keccak256(m) => sha3::Keccak256::digest(m).into(),
        }
    }

    fn data(&self) -> cggmp24::DataToSign<Secp256k1> {
        match self {
            Hashed::Sha256(m) => cggmp24::DataToSign::digest::<sha2::Sha256>(m),
            Hashed::Keccak256(m) => cggmp24::DataToSign::digest::<sha3::Keccak256>(m),
        }
    }
}

/// A finished ECDSA signature.
pub struct SignOutput {
    /// r||s, low-S.
    pub signature: Vec<u8>,
    /// Recovery id for `public_key`.
    pub recovery_id: u8,
    /// The key it verifies under (derived when a path was given).
    pub public_key: Vec<u8>,
}

/// Signs a 32-byte digest by the full interactive protocol with the core
/// share and the committee's aux info, as signer `seat` (parties in
/// keygen-index order, `indexes_at_keygen` their keygen indexes).
pub async fn sign(
    seat: Seat<'_>,
    indexes_at_keygen: Vec<u16>,
    core: CoreShare,
    aux: &[u8],
    digest: [u8; 32],
    path: Vec<u32>,
) -> Result<SignOutput, RequestError> {
    let share = complete(core, aux)?;
    let public_key = derived_key(&share, &path)?;
    let (i, eid) = (seat.index(), seat.execution());
    // The full protocol is safe for a digest whose message the signer never
    // saw (cggmp24's `PrehashedDataToSign`); a presignature would not be.
    let data = PrehashedDataToSign::from_scalar(Scalar::<Secp256k1>::from_be_bytes_mod_order(digest));
    // Round 4 carries this signer's partial signature.
    let releases: fn(&cggmp24::signing::msg::Msg<Secp256k1, sha2::Sha256>) -> bool = |m| matches!(m, cggmp24::signing::msg::Msg::Round4(_));
    let signature = seat
        .heavy()
        .run_signing(releases, move |party: Party<cggmp24::signing::msg::Msg<Secp256k1, sha2::Sha256>>| {
            let builder = cggmp24::signing(ExecutionId::new(&eid), i, &indexes_at_keygen, &share);
            let builder = if path.is_empty() { builder } else { builder.set_derivation_path(path.iter().copied()).map_err(|e| e.to_string())? };
            futures::executor::block_on(builder.sign(&mut rand_core::OsRng, party, &data)).map_err(|e| e.to_string())
        })
        .await?
        .normalize_s();
    if signature.verify(&public_key, &data).is_err() {
        return Err(RequestError::new(ErrorCode::ProtocolAbort, "the protocol produced a signature that does not verify"));
    }
    let mut rs = vec![0u8; 64];
    signature.write_to_slice(&mut rs);
    let public_key = public_key_bytes(&public_key);
    let recovery_id = recovery_id(&public_key, &digest, &rs)?;
    Ok(SignOutput { signature: rs, recovery_id, public_key })
}

fn public_key_bytes(p: &Point<Secp256k1>) -> Vec<u8> {
    p.to_bytes(true).to_vec()
}

fn recovery_id(public_key: &[u8], digest: &[u8; 32], rs: &[u8]) -> Result<u8, RequestError> {
    use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
    let vk = VerifyingKey::from_sec1_bytes(public_key).map_err(|e| internal("public key", e))?;
    let sig = Signature::from_slice(rs).map_err(|e| internal("signature", e))?;
    RecoveryId::trial_recovery_from_prehash(&vk, digest, &sig).map(|id| id.to_byte()).map_err(|e| internal("recovery id", e))
}

/// How an in-process baseline runs its parties.
#[derive(Clone, Copy)]
pub enum Threads {
    /// All on this thread (round-based's simulator).
    One,
    /// Each on a thread of its own ([`session::run_threaded`]): the
    /// cluster's parallelism without its transport.
    Each,
}

/// Signs `digest` with the given parties' stored shares and aux info in
/// this one process (no network, no link): the baselines the benchmark
/// compares the cluster against. `indexes_at_keygen` are the signers'
/// keygen indexes, ascending, one per share.
pub fn sign_in_process(
    shares: &[Zeroizing<Vec<u8>>],
    auxes: &[Zeroizing<Vec<u8>>],
    indexes_at_keygen: &[u16],
    digest: [u8; 32],
    threads: Threads,
) -> Result<Vec<u8>, RequestError> {
    let shares: Vec<KeyShare<Secp256k1>> = shares.iter().zip(auxes).map(|(s, a)| complete(core_share(s)?.0, a)).collect::<Result<_, _>>()?;
    let data = &PrehashedDataToSign::from_scalar(Scalar::<Secp256k1>::from_be_bytes_mod_order(digest));
    let eid_bytes = rand_eid();
    let n = shares.len() as u16;
    let builder = |i: u16| cggmp24::signing(ExecutionId::new(&eid_bytes), i, indexes_at_keygen, &shares[usize::from(i)]);
    let signature = match threads {
        Threads::One => round_based::sim::run(n, |i, party| async move { builder(i).sign(&mut rand_core::OsRng, party, data).await })
            .map_err(|e| internal("simulation", e))?
            .expect_ok()
            .expect_eq(),
        Threads::Each => session::run_threaded(n, |i, party: Party<cggmp24::signing::msg::Msg<Secp256k1, sha2::Sha256>>| {
            futures::executor::block_on(builder(i).sign(&mut rand_core::OsRng, party, data))
        })
        .into_iter()
        .next()
        .expect("two or more parties")
        .map_err(|e| internal("signing", e))?,
    }
    .normalize_s();
    let mut rs = vec![0u8; 64];
    signature.write_to_slice(&mut rs);
    Ok(rs)
}

/// A presignature as this signer seals it: its secret part (single use:
/// two partial signatures from one presignature give the key away) and
/// the public data every signer of its set checks partial signatures
/// against. Made for one signer set and one derivation path, declared
/// before it was made (CGGMP24 derives inside the presignature).
#[derive(serde::Serialize, serde::Deserialize)]
struct PresignatureRecord {
    presignature: cggmp24::signing::Presignature<Secp256k1>,
    gamma: cggmp24::generic_ec::NonZero<Point<Secp256k1>>,
    /// Per signer of the set, in session order: (tilde Delta, tilde S).
    commitments: Vec<(Point<Secp256k1>, Point<Secp256k1>)>,
    /// The key its signatures verify under (derived along `path`).
    public_key: Vec<u8>,
    path: Vec<u32>,
}

/// Makes one presignature with the signers of `seat` (keygen indexes
/// `indexes_at_keygen`, ascending) for signatures under the key derived
/// along `path`: three rounds of the protocol, no message to sign yet.
/// Returns the record to seal.
pub async fn presign(seat: Seat<'_>, indexes_at_keygen: Vec<u16>, core: CoreShare, aux: &[u8], path: Vec<u32>) -> Result<Zeroizing<Vec<u8>>, RequestError> {
    let share = complete(core, aux)?;
    let public_key = derived_key(&share, &path)?;
    let (i, eid) = (seat.index(), seat.execution());
    let made = seat
        .heavy()
        .run(move |party: Party<cggmp24::signing::msg::Msg<Secp256k1, sha2::Sha256>>| {
            let builder = cggmp24::signing(ExecutionId::new(&eid), i, &indexes_at_keygen, &share);
            let builder = if path.is_empty() { builder } else { builder.set_derivation_path(path.iter().copied()).map_err(|e| e.to_string())? };
            let made = futures::executor::block_on(builder.generate_presignature(&mut rand_core::OsRng, party)).map_err(|e| e.to_string())?;
            Ok::<_, String>(presignature_record(made, public_key_bytes(&public_key), path))
        })
        .await?;
    Ok(made)
}

type Presigned = (cggmp24::signing::Presignature<Secp256k1>, cggmp24::signing::PresignaturePublicData<Secp256k1>);

/// The record this signer seals for a presignature it made.
fn presignature_record((presignature, public): Presigned, public_key: Vec<u8>, path: Vec<u32>) -> Zeroizing<Vec<u8>> {
    let record = PresignatureRecord {
        presignature,
        gamma: public.Gamma,
        commitments: public.commitments.iter().map(|c| (c.tilde_Delta, c.tilde_S)).collect(),
        public_key,
        path,
    };
    Zeroizing::new(serde_json::to_vec(&record).expect("presignatures serialise"))
}

fn derived_key(share: &KeyShare<Secp256k1>, path: &[u32]) -> Result<Point<Secp256k1>, RequestError> {
    if path.is_empty() {
        return Ok(share.shared_public_key.into_inner());
    }
    Ok(share
        .derive_child_public_key::<Slip10, _>(path.iter().copied())
        .map_err(|e| RequestError::new(ErrorCode::Malformed, format!("derivation path: {e}")))?
        .public_key)
}

/// The presigned signing round's one message: a signer's partial signature.
#[derive(Clone, Debug, round_based::ProtocolMessage, serde::Serialize, serde::Deserialize)]
pub enum PresignedMsg {
    /// `sigma_i`, releasing this signer's share of the signature.
    Partial(cggmp24::signing::PartialSignature<Secp256k1>),
}

/// Why a signature from pooled work (an ECDSA presignature, FROST nonces)
/// was not made.
#[derive(Debug, thiserror::Error)]
pub enum PresignedError {
    /// The partial signature (signature share) of this session party does
    /// not check against the pooled public data.
    #[error("party {0}'s partial signature does not match the presignature")]
    BadPartial(u16),
    /// The presignature record does not fit this session or does not decode.
    #[error("presignature: {0}")]
    Unusable(&'static str),
    /// The transport failed.
    #[error("{0}")]
    Transport(String),
}

/// Signs a message this signer hashed (a presignature must never sign a
/// digest whose message the signer did not see) with a presignature, in
/// one round: every signer sends its partial signature, checks every
/// other against the presignature's public data (a bad one is blamed),
/// and combines. The partial leaves under `Enclave::release`'s fencing.
/// `tamper` (a test fault hook) sends a partial that does not match.
pub async fn sign_presigned(
    seat: Seat<'_>,
    record: Zeroizing<Vec<u8>>,
    message: Hashed,
    path: Vec<u32>,
    tamper: bool,
) -> Result<Result<SignOutput, PresignedError>, RequestError> {
    let (i, n) = (seat.index(), seat.parties());
    let releases: fn(&PresignedMsg) -> bool = |m| matches!(m, PresignedMsg::Partial(_));
    seat.run_signing(releases, move |party: Party<PresignedMsg>| {
        Ok::<_, std::convert::Infallible>(futures::executor::block_on(presigned_round(party, i, n, &record, &message, &path, tamper)))
    })
    .await
}

async fn presigned_round<M>(party: M, i: u16, n: u16, record: &[u8], message: &Hashed, path: &[u32], tamper: bool) -> Result<SignOutput, PresignedError>
where
    M: round_based::Mpc<ProtocolMessage = PresignedMsg>,
{
    use cggmp24::generic_ec::coords::AlwaysHasAffineX;
    let record: PresignatureRecord = serde_json::from_slice(record).map_err(|_| PresignedError::Unusable("does not decode"))?;
    if record.commitments.len() != usize::from(n) {
        return Err(PresignedError::Unusable("made for another number of signers"));
    }
    if record.path != path {
        return Err(PresignedError::Unusable("made for another derivation path"));
    }
    let digest = message.digest();
    let data = message.data();
    let gamma = record.gamma;
    let mut mine = record.presignature.issue_partial_signature(data);
    if tamper {
        mine.sigma += Scalar::one();
    }
    let others = crate::broadcast::exchange(party, i, n, mine).await.map_err(|e| PresignedError::Transport(e.to_string()))?;
    let partials = others.into_vec_including_me(mine);
    // The partials' sum is the signature, and recovering the key from it
    // is its verification (a signature that does not verify under the key
    // recovers no id), where `combine` would first check sigma_j * Gamma =
    // m * tilde_Delta_j + r * tilde_S_j for every signer j (three
    // multiplications each). The partials are checked one by one
    // only when the sum does not verify, to name the cheat; a sum that
    // verifies is the signature every partial was for.
    let (r, m) = (gamma.x().to_scalar(), data.to_scalar());
    let sigma: Scalar<Secp256k1> = partials.iter().map(|p| &p.sigma).sum();
    let verified = NonZero::from_scalar(r).zip(NonZero::from_scalar(sigma)).and_then(|(r, s)| {
        let mut rs = vec![0u8; 64];
        cggmp24::signing::Signature::from_raw_parts(r, s).normalize_s().write_to_slice(&mut rs);
        recovery_id(&record.public_key, &digest, &rs).ok().map(|id| (rs, id))
    });
    let Some((rs, recovery_id)) = verified else {
        return Err(match partials.iter().zip(&record.commitments).position(|(partial, (delta, s))| partial.sigma * gamma != m * delta + r * s) {
            Some(j) => PresignedError::BadPartial(j as u16),
            None => PresignedError::Unusable("the combined signature does not verify"),
        });
    };
    Ok(SignOutput { signature: rs, recovery_id, public_key: record.public_key })
}

/// Makes the committee's aux info in this one process from each party's
/// primes (round-based's simulator): the benchmark's measure of what a
/// committee's aux info costs.
pub fn aux_info_in_process(primes: Vec<Primes>) -> Result<Vec<Zeroizing<Vec<u8>>>, RequestError> {
    let n = primes.len() as u16;
    let eid_bytes = rand_eid();
    let primes = std::sync::Mutex::new(primes.into_iter().map(Some).collect::<Vec<_>>());
    round_based::sim::run(n, |i, party| {
        let mine = primes.lock().expect("primes lock")[usize::from(i)].take().expect("each party's primes once").0;
        let eid = ExecutionId::new(&eid_bytes);
        async move { cggmp24::aux_info_gen(eid, i, n, mine).start(&mut rand_core::OsRng, party).await }
    })
    .map_err(|e| internal("simulation", e))?
    .expect_ok()
    .into_vec()
    .into_iter()
    .map(|aux| Ok(Zeroizing::new(serde_json::to_vec(&aux).expect("aux info serialises"))))
    .collect()
}

/// Makes one presignature per signer in this one process, from the
/// signers' stored shares and aux info: the benchmark's baseline, and the
/// unit tests'.
pub fn presign_in_process(
    shares: &[Zeroizing<Vec<u8>>],
    auxes: &[Zeroizing<Vec<u8>>],
    indexes_at_keygen: &[u16],
    path: &[u32],
) -> Result<Vec<Zeroizing<Vec<u8>>>, RequestError> {
    let shares: Vec<KeyShare<Secp256k1>> = shares.iter().zip(auxes).map(|(s, a)| complete(core_share(s)?.0, a)).collect::<Result<_, _>>()?;
    let public_key = public_key_bytes(&derived_key(&shares[0], path)?);
    let eid_bytes = rand_eid();
    let made = round_based::sim::run(shares.len() as u16, |i, party| {
        let share = &shares[usize::from(i)];
        let eid = ExecutionId::new(&eid_bytes);
        async move {
            let builder = cggmp24::signing(eid, i, indexes_at_keygen, share);
            let builder = if path.is_empty() { builder } else { builder.set_derivation_path(path.iter().copied()).expect("a valid path") };
            builder.generate_presignature(&mut rand_core::OsRng, party).await
        }
    })
    .map_err(|e| internal("simulation", e))?
    .expect_ok()
    .into_vec();
    Ok(made.into_iter().map(|made| presignature_record(made, public_key.clone(), path.to_vec())).collect())
}

/// Signs `message` with one presignature per signer in this one process;
/// every signer's result, in session order.
pub fn sign_presigned_in_process(
    records: &[Zeroizing<Vec<u8>>],
    message: &[u8],
    path: &[u32],
) -> Result<Vec<Result<SignOutput, PresignedError>>, RequestError> {
    let n = records.len() as u16;
    let hashed = &Hashed::Sha256(message.to_vec());
    Ok(round_based::sim::run(n, |i, party| async move { presigned_round(party, i, n, &records[usize::from(i)], hashed, path, false).await })
        .map_err(|e| internal("simulation", e))?
        .into_vec())
}

fn rand_eid() -> [u8; 32] {
    use rand_core::RngCore;
    let mut b = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut b);
    b
}

// Resharing computes on the same generic-ec and key-share as cggmp24: a
// core share crosses unchanged.

const SHARE_ENCODING: ReshareError = ReshareError::ShareEncoding("ecdsa key share");

/// A stored ECDSA share as resharing's dealer reads it (either format).
pub fn reshare_source(stored: &[u8]) -> Result<reshare::KeyShare<reshare::Secp256k1>, ReshareError> {
    let (CoreShare(core), _) = core_share(stored).map_err(|_| SHARE_ENCODING)?;
    let chain_code = core.chain_code;
    Ok(reshare::KeyShare { core, chain_code })
}

/// Serialises a new member's reshared share in the format [`keygen`]
/// stores; it signs with the new committee's aux info.
pub fn reshared(share: reshare::KeyShare<reshare::Secp256k1>) -> Result<Zeroizing<Vec<u8>>, ReshareError> {
    if share.core.chain_code != share.chain_code {
        return Err(ReshareError::InvalidNewShare);
    }
    Ok(Zeroizing::new(serde_json::to_vec(&share.core).expect("key share serialises")))
}

/// Test fixtures for resharing: cggmp24's trusted dealer and aux data,
/// kept here so that only this module names cggmp24.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A t-of-n HD key's shares from cggmp24's trusted dealer, as resharing
    /// reads them.
    pub fn dealt(n: u16, t: u16) -> Vec<reshare::KeyShare<reshare::Secp256k1>> {
        cggmp24::trusted_dealer::builder::<Secp256k1, SecurityLevel128>(n)
            .set_threshold(Some(t))
            .hd_wallet(true)
            .generate_core_shares(&mut rand_core::OsRng)
            .unwrap()
            .into_iter()
            .map(|core| {
                let chain_code = core.chain_code;
                reshare::KeyShare { core, chain_code }
            })
            .collect()
    }

    /// Aux info for a committee of four (what the new committee's aux
    /// info round would produce), serialised as sealed. Read from a
    /// test-only fixture made from test-only primes; never use these keys
    /// for anything else. The ignored test `write_aux_fixture` makes it.
    pub fn aux_of_four() -> Vec<Zeroizing<Vec<u8>>> {
        let all: Vec<serde_json::Value> = serde_json::from_slice(include_bytes!("testdata/aux-info-4.json")).expect("the fixture decodes");
        all.iter().map(|a| Zeroizing::new(serde_json::to_vec(a).unwrap())).collect()
    }

    /// Writes `testdata/aux-info-4.json` (cggmp24's trusted dealer, from
    /// the first four sets of the test primes fixture).
    #[test]
    #[ignore = "writes the fixture; run by hand: cargo test -p conclave-enclave --lib -- --ignored write_aux_fixture"]
    fn write_aux_fixture() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let sets: Vec<String> = serde_json::from_slice(&std::fs::read(root.join("../tests/fixtures/pregenerated-primes.json")).unwrap()).unwrap();
        let primes = sets.iter().take(4).map(|s| serde_json::from_str(s).unwrap()).collect();
        let aux = cggmp24::trusted_dealer::generate_aux_data_with_primes::<SecurityLevel128, _>(&mut rand_core::OsRng, primes, false).unwrap();
        std::fs::write(root.join("src/testdata/aux-info-4.json"), serde_json::to_vec(&aux).unwrap()).unwrap();
    }

    /// The root xpub a stored share reports, as keygen does.
    pub fn xpub(stored: &[u8]) -> String {
        let (CoreShare(core), _) = core_share(stored).unwrap();
        let public_key = core.shared_public_key.to_bytes(true).as_ref().try_into().unwrap();
        conclave_proto::xpub::Xpub { public_key, chain_code: core.chain_code.unwrap() }.encode()
    }

    type Blobs = Vec<Zeroizing<Vec<u8>>>;

    /// A 2-of-4 HD key's stored shares (trusted dealer) and the committee's
    /// aux info from the fixture.
    fn two_of_four() -> (Blobs, Blobs) {
        let cores = cggmp24::trusted_dealer::builder::<Secp256k1, SecurityLevel128>(4)
            .set_threshold(Some(2))
            .hd_wallet(true)
            .generate_core_shares(&mut rand_core::OsRng)
            .unwrap();
        (cores.iter().map(|c| Zeroizing::new(serde_json::to_vec(c).unwrap())).collect(), aux_of_four())
    }

    fn pick(all: &[Zeroizing<Vec<u8>>], signers: &[u16]) -> Vec<Zeroizing<Vec<u8>>> {
        signers.iter().map(|&i| all[usize::from(i)].clone()).collect()
    }

    #[test]
    fn presigned_signatures_verify_under_the_key_their_path_declared() {
        use k256::ecdsa::signature::Verifier;
        let (shares, aux) = two_of_four();
        let signers = [1, 3];
        for path in [vec![], vec![7, 1_000]] {
            let records = presign_in_process(&pick(&shares, &signers), &pick(&aux, &signers), &signers, &path).unwrap();
            // A presignature serves only the path it was made for.
            let other: &[u32] = if path.is_empty() { &[3] } else { &[] };
            let refused = sign_presigned_in_process(&records, b"pay 1 BTC", other).unwrap();
            assert!(refused.iter().all(|r| matches!(r, Err(PresignedError::Unusable(_)))), "{path:?}");
            let out = sign_presigned_in_process(&records, b"pay 1 BTC", &path).unwrap();
            let (CoreShare(core), _) = core_share(&shares[0]).unwrap();
            let expected = if path.is_empty() {
                core.shared_public_key.to_bytes(true).to_vec()
            } else {
                core.derive_child_public_key::<Slip10, _>(path.iter().copied()).unwrap().public_key.to_bytes(true).to_vec()
            };
            for signer in out {
                let signer = signer.expect("every signer combines");
                assert_eq!(signer.public_key, expected, "under the key of path {path:?}");
                let vk = k256::ecdsa::VerifyingKey::from_sec1_bytes(&expected).unwrap();
                vk.verify(b"pay 1 BTC", &k256::ecdsa::Signature::from_slice(&signer.signature).unwrap()).expect("verifies");
            }
        }
    }

    #[test]
    fn a_partial_signature_that_does_not_match_its_presignature_blames_its_signer() {
        let (shares, aux) = two_of_four();
        let signers = [0, 2];
        let mut records = presign_in_process(&pick(&shares, &signers), &pick(&aux, &signers), &signers, &[]).unwrap();
        // Session party 1 cheats: its partial comes from another k.
        let mut cheat: PresignatureRecord = serde_json::from_slice(&records[1]).unwrap();
        let mut k = *cheat.presignature.tilde_k.as_ref() + Scalar::one();
        cheat.presignature.tilde_k = cggmp24::generic_ec::SecretScalar::new(&mut k);
        records[1] = Zeroizing::new(serde_json::to_vec(&cheat).unwrap());
        let out = sign_presigned_in_process(&records, b"m", &[]).unwrap();
        assert!(matches!(out[0], Err(PresignedError::BadPartial(1))), "{:?}", out[0].as_ref().err());
    }
}
