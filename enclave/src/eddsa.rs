//! The EdDSA engine: FROST (RFC 9591) on ed25519 with `givre`; keygen by
//! `cggmp24-keygen`'s DKG (the one givre would re-export). The only module
//! that names either.

use crate::ecdsa::PresignedError;
use crate::reshare::{self, ReshareError};
use crate::session::{Party, Seat};
use cggmp24_keygen::security_level::SecurityLevel128;
use conclave_proto::{ErrorCode, RequestError};
use givre::ciphersuite::{Ciphersuite, Ed25519};
use zeroize::Zeroizing;

type Curve = <Ed25519 as Ciphersuite>::Curve;

fn internal(what: &str, e: impl std::fmt::Display) -> RequestError {
    RequestError::new(ErrorCode::Internal, format!("{what}: {e}"))
}

/// Public output of keygen.
pub struct KeygenOutput {
    /// 32-byte RFC 8032 public key.
    pub public_key: Vec<u8>,
    /// The serialised key share.
    pub share: Zeroizing<Vec<u8>>,
}

/// Runs threshold keygen.
pub async fn keygen(seat: Seat<'_>, threshold: u16) -> Result<KeygenOutput, RequestError> {
    let (i, n, eid) = (seat.index(), seat.parties(), seat.execution());
    let share = seat
        .run(move |party: Party<cggmp24_keygen::msg::threshold::Msg<Curve, SecurityLevel128, sha2::Sha256>>| {
            futures::executor::block_on(
                cggmp24_keygen::keygen::<Curve>(cggmp24_keygen::ExecutionId::new(&eid), i, n).set_threshold(threshold).start(&mut rand_core::OsRng, party),
            )
        })
        .await?;
    let public_key = Ed25519::normalize_point(share.shared_public_key);
    Ok(KeygenOutput {
        public_key: Ed25519::serialize_normalized_point(&public_key).as_ref().to_vec(),
        share: Zeroizing::new(serde_json::to_vec(&share).expect("key share serialises")),
    })
}

/// Signs `message` from `seat` (parties in keygen-index order,
/// `indexes_at_keygen` their keygen indexes). Returns R||S and the public key.
pub async fn sign(seat: Seat<'_>, indexes_at_keygen: Vec<u16>, share: &[u8], message: Vec<u8>) -> Result<(Vec<u8>, Vec<u8>), RequestError> {
    let share: givre::KeyShare<Curve> = crate::key_shares::decode(share).map_err(|e| internal("sealed share", e))?;
    let public_key = Ed25519::normalize_point(share.shared_public_key);
    let public_key = Ed25519::serialize_normalized_point(&public_key).as_ref().to_vec();
    let i = seat.index();
    let msg = message.clone();
    // Round 2 carries this signer's signature share.
    let releases: fn(&givre::signing::full_signing::Msg<Curve>) -> bool = |m| matches!(m, givre::signing::full_signing::Msg::Round2(_));
    let signature = seat
        .run_signing(releases, move |party: Party<givre::signing::full_signing::Msg<Curve>>| {
            futures::executor::block_on(givre::signing::<Ed25519>(i, &share, &indexes_at_keygen, &msg).sign(&mut rand_core::OsRng, party))
        })
        .await?;
    Ok((verified(&signature, &public_key, &message)?, public_key))
}

/// R||S of `signature`, once it passes RFC 8032 verification with the
/// strict checks, as clients will apply them.
fn verified(signature: &givre::signing::aggregate::Signature<Ed25519>, public_key: &[u8], message: &[u8]) -> Result<Vec<u8>, RequestError> {
    let mut out = vec![0u8; givre::signing::aggregate::Signature::<Ed25519>::serialized_len()];
    signature.write_to_slice(&mut out);
    let vk = ed25519_dalek::VerifyingKey::from_bytes(public_key.try_into().map_err(|e| internal("public key", e))?).map_err(|e| internal("public key", e))?;
    let sig = ed25519_dalek::Signature::from_slice(&out).map_err(|e| internal("signature", e))?;
    vk.verify_strict(message, &sig).map_err(|_| RequestError::new(ErrorCode::ProtocolAbort, "the signature shares do not make a signature that verifies"))?;
    Ok(out)
}

/// A signer's precomputed FROST nonces as it seals them: its secret nonces
/// (single use: two signatures under one nonce pair give the share away)
/// and every signer's public commitments, in session order with their
/// keygen indexes.
#[derive(serde::Serialize, serde::Deserialize)]
struct NoncesRecord {
    secret: givre::signing::round1::SecretNonces<Curve>,
    commitments: Vec<(u16, givre::signing::round1::PublicCommitments<Curve>)>,
}

/// The nonce round's one message: a signer's public commitments.
#[derive(Clone, Debug, round_based::ProtocolMessage, serde::Serialize, serde::Deserialize)]
pub enum CommitMsg {
    /// FROST round 1, ahead of any message.
    Commitments(givre::signing::round1::PublicCommitments<Curve>),
}

/// The signing round's one message, with precomputed nonces.
#[derive(Clone, Debug, round_based::ProtocolMessage, serde::Serialize, serde::Deserialize)]
pub enum ShareMsg {
    /// FROST round 2: this signer's signature share (its release).
    Share(givre::signing::round2::SigShare<Curve>),
}

/// FROST's first round ahead of any message (`seat`: the signer set,
/// `indexes_at_keygen` ascending): each signer draws nonces and broadcasts
/// their commitments. Returns the record to seal.
pub async fn commit_nonces(seat: Seat<'_>, indexes_at_keygen: Vec<u16>, share: &[u8]) -> Result<Zeroizing<Vec<u8>>, RequestError> {
    let share: givre::KeyShare<Curve> = crate::key_shares::decode(share).map_err(|e| internal("sealed share", e))?;
    let (i, n) = (seat.index(), seat.parties());
    seat.run(move |party: Party<CommitMsg>| {
        futures::executor::block_on(async {
            let (secret, mine) = givre::signing::round1::commit::<Ed25519>(&mut rand_core::OsRng, &share);
            let all = crate::broadcast::exchange(party, i, n, mine).await.map_err(|e| e.to_string())?.into_vec_including_me(mine);
            let record = NoncesRecord { secret, commitments: indexes_at_keygen.iter().copied().zip(all).collect() };
            Ok::<_, String>(Zeroizing::new(serde_json::to_vec(&record).expect("nonces serialise")))
        })
    })
    .await
}

/// Signs `message` in one round with precomputed nonces (`record`, from
/// [`commit_nonces`], for exactly this signer set): each signer sends its
/// signature share under `Enclave::release`'s fencing, and every signer
/// aggregates and verifies. Returns R||S and the public key. `tamper` (a
/// test fault hook) sends a share that does not fit.
pub async fn sign_committed(
    seat: Seat<'_>,
    record: Zeroizing<Vec<u8>>,
    share: &[u8],
    message: Vec<u8>,
    tamper: bool,
) -> Result<Result<(Vec<u8>, Vec<u8>), PresignedError>, RequestError> {
    let share: givre::KeyShare<Curve> = crate::key_shares::decode(share).map_err(|e| internal("sealed share", e))?;
    let record: NoncesRecord = serde_json::from_slice(&record).map_err(|e| internal("sealed nonces do not decode", e))?;
    let (i, n) = (seat.index(), seat.parties());
    if record.commitments.len() != usize::from(n) {
        return Err(internal("nonces", "made for another number of signers"));
    }
    let public_key = Ed25519::serialize_normalized_point(&Ed25519::normalize_point(share.shared_public_key)).as_ref().to_vec();
    let msg = message.clone();
    let releases: fn(&ShareMsg) -> bool = |m| matches!(m, ShareMsg::Share(_));
    let signature = seat
        .run_signing(releases, move |party: Party<ShareMsg>| {
            Ok::<_, std::convert::Infallible>(futures::executor::block_on(async {
                let unusable = |_| PresignedError::Unusable("the nonces do not fit this key share");
                let mut mine = givre::signing::round2::sign::<Ed25519>(&share, record.secret, &msg, &record.commitments).map_err(unusable)?;
                if tamper {
                    mine.0 += givre::generic_ec::Scalar::one();
                }
                let shares =
                    crate::broadcast::exchange(party, i, n, mine).await.map_err(|e| PresignedError::Transport(e.to_string()))?.into_vec_including_me(mine);
                let signers: Vec<_> = record.commitments.iter().zip(shares).map(|((j, c), s)| (*j, *c, s)).collect();
                givre::signing::aggregate::aggregate::<Ed25519>(share.as_ref(), &signers, &msg).map_err(|_| match unfit_share(&share, &signers, &msg) {
                    Some(party) => PresignedError::BadPartial(party as u16),
                    None => PresignedError::Unusable("the signature shares fit but do not aggregate"),
                })
            }))
        })
        .await?;
    Ok(match signature {
        Ok(signature) => Ok((verified(&signature, &public_key, &message)?, public_key)),
        Err(e) => Err(e),
    })
}

/// The session party whose signature share does not fit, checked one by
/// one as RFC 9591 (FROST), section 5.4 `verify_signature_share` does:
/// `z_i * B == R_i + (c * lambda_i) * Y_i`, with the commitment share
/// `R_i = D_i + rho_i * E_i`, the binding factors `rho` of section 4.4,
/// the challenge `c` over the group commitment and the Lagrange
/// coefficient `lambda_i` of the signer's evaluation point. givre checks
/// the aggregate alone; this runs only when that fails, to name the cheat.
fn unfit_share(
    key: &givre::KeyShare<Curve>,
    signers: &[(u16, givre::signing::round1::PublicCommitments<Curve>, givre::signing::round2::SigShare<Curve>)],
    msg: &[u8],
) -> Option<usize> {
    use givre::generic_ec::{NonZero, Point, Scalar};
    use sha2::digest::{FixedOutput, Update};
    let key = &key.key_info;
    let point = |j: u16| match &key.vss_setup {
        Some(vss) => vss.I.get(usize::from(j)).copied(),
        None => NonZero::from_scalar(Scalar::from(j + 1)),
    };
    let ids: Vec<NonZero<Scalar<Curve>>> = signers.iter().map(|(j, ..)| point(*j)).collect::<Option<_>>()?;
    let mut sorted: Vec<_> = ids.iter().zip(signers).map(|(id, (_, c, _))| (*id, *c)).collect();
    sorted.sort_by_key(|(id, _)| *id);
    let pk_bytes = Ed25519::serialize_point(&key.shared_public_key);
    let msg_hash = Ed25519::h4().chain(msg).finalize_fixed();
    let commitments_hash = sorted
        .iter()
        .fold(Ed25519::h5(), |h, (id, c)| {
            h.chain(Ed25519::serialize_scalar(id)).chain(Ed25519::serialize_point(&c.hiding_comm)).chain(Ed25519::serialize_point(&c.binding_comm))
        })
        .finalize_fixed();
    let rho = |id: &NonZero<Scalar<Curve>>| Ed25519::h1(&[pk_bytes.as_ref(), &msg_hash, &commitments_hash, Ed25519::serialize_scalar(id).as_ref()]);
    let share_commitment = |id, c: &givre::signing::round1::PublicCommitments<Curve>| c.hiding_comm + c.binding_comm * rho(id);
    let group: Point<Curve> = sorted.iter().map(|(id, c)| share_commitment(id, c)).sum();
    let challenge = Ed25519::compute_challenge(&Ed25519::normalize_point(group), &Ed25519::normalize_point(key.shared_public_key), msg);
    signers.iter().zip(&ids).enumerate().position(|(k, ((j, c, z), id))| {
        match (key.public_shares.get(usize::from(*j)), generic_ec_zkp::polynomial::lagrange_coefficient_at_zero(k, &ids)) {
            (Some(y), Some(lambda)) => Point::generator() * z.0 != share_commitment(id, c) + **y * (challenge * *lambda),
            _ => true,
        }
    })
}

/// Signs `message` with the given parties' serialised shares in this one
/// process (round-based's simulator): the benchmark's baseline.
pub fn sign_in_process(shares: &[Zeroizing<Vec<u8>>], indexes_at_keygen: &[u16], message: &[u8]) -> Result<Vec<u8>, RequestError> {
    let shares: Vec<givre::KeyShare<Curve>> =
        shares.iter().map(|s| serde_json::from_slice(s).map_err(|e| internal("share does not decode", e))).collect::<Result<_, _>>()?;
    let signature = round_based::sim::run(shares.len() as u16, |i, party| {
        let share = &shares[usize::from(i)];
        async move { givre::signing::<Ed25519>(i, share, indexes_at_keygen, message).sign(&mut rand_core::OsRng, party).await }
    })
    .map_err(|e| internal("simulation", e))?
    .expect_ok()
    .expect_eq();
    let mut out = vec![0u8; givre::signing::aggregate::Signature::<Ed25519>::serialized_len()];
    signature.write_to_slice(&mut out);
    Ok(out)
}

// Resharing (issue 6): givre's shares are key-share 0.6 shares on
// generic-ec 0.4, the types `reshare` computes on, so they cross unchanged.
// givre is built without its `hd-wallet` feature, so these shares hold no
// chain code.

const SHARE_ENCODING: ReshareError = ReshareError::ShareEncoding("eddsa key share");

/// A stored EdDSA share as resharing's dealer reads it.
pub fn reshare_source(stored: &[u8]) -> Result<reshare::KeyShare<reshare::Ed25519>, ReshareError> {
    let core: givre::KeyShare<Curve> = serde_json::from_slice(stored).map_err(|_| SHARE_ENCODING)?;
    Ok(reshare::KeyShare { core, chain_code: None })
}

/// Serialises a reshared share in the format [`keygen`] stores and [`sign`]
/// reads.
pub fn reshared(share: reshare::KeyShare<reshare::Ed25519>) -> Result<Zeroizing<Vec<u8>>, ReshareError> {
    if share.chain_code.is_some() {
        return Err(ReshareError::ChainCodeUnsupported);
    }
    Ok(Zeroizing::new(serde_json::to_vec(&share.core).expect("key shares serialise")))
}

/// Test fixtures for resharing: givre's trusted dealer, kept here so that
/// only this module names givre.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A t-of-n key's shares, at random evaluation points when asked (the
    /// old committee's points need not be 1..=n), serialised as stored.
    pub fn dealt(n: u16, t: u16, random_points: bool) -> Vec<Zeroizing<Vec<u8>>> {
        let builder = givre::trusted_dealer::builder::<Curve>(n).set_threshold(Some(t));
        let shares = if random_points { builder.generate_shares_at_random(&mut rand_core::OsRng) } else { builder.generate_shares(&mut rand_core::OsRng) };
        shares.unwrap().iter().map(|s| Zeroizing::new(serde_json::to_vec(s).unwrap())).collect()
    }

    /// The RFC 8032 public key of a stored share.
    pub fn public_key(stored: &[u8]) -> Vec<u8> {
        let share: givre::KeyShare<Curve> = serde_json::from_slice(stored).unwrap();
        Ed25519::serialize_normalized_point(&Ed25519::normalize_point(share.shared_public_key)).as_ref().to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Signature shares of signers `set` (keygen indexes) of a dealt key
    /// over `msg`, with their commitments, the way `sign_committed` makes
    /// them.
    #[allow(clippy::type_complexity)]
    fn shares(
        keys: &[givre::KeyShare<Curve>],
        set: &[u16],
        msg: &[u8],
    ) -> Vec<(u16, givre::signing::round1::PublicCommitments<Curve>, givre::signing::round2::SigShare<Curve>)> {
        let nonces: Vec<_> = set.iter().map(|&j| givre::signing::round1::commit::<Ed25519>(&mut rand_core::OsRng, &keys[usize::from(j)])).collect();
        let commitments: Vec<_> = set.iter().zip(&nonces).map(|(j, (_, c))| (*j, *c)).collect();
        set.iter()
            .zip(nonces)
            .map(|(&j, (secret, c))| (j, c, givre::signing::round2::sign::<Ed25519>(&keys[usize::from(j)], secret, msg, &commitments).unwrap()))
            .collect()
    }

    #[test]
    fn a_signature_share_that_does_not_fit_names_its_signer_and_honest_shares_name_none() {
        for random_points in [false, true] {
            let keys: Vec<givre::KeyShare<Curve>> = testing::dealt(3, 2, random_points).iter().map(|s| serde_json::from_slice(s).unwrap()).collect();
            let msg = b"pay 1 to bob";
            let mut signers = shares(&keys, &[0, 2], msg);
            assert!(givre::signing::aggregate::aggregate::<Ed25519>(keys[0].as_ref(), &signers, msg).is_ok());
            assert_eq!(unfit_share(&keys[0], &signers, msg), None, "every honest share fits (points at random: {random_points})");
            signers[1].2 .0 += givre::generic_ec::Scalar::one();
            assert!(givre::signing::aggregate::aggregate::<Ed25519>(keys[0].as_ref(), &signers, msg).is_err());
            assert_eq!(unfit_share(&keys[0], &signers, msg), Some(1), "the second party's share is named (points at random: {random_points})");
        }
    }
}
