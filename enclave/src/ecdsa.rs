//! The ECDSA engine: CGGMP21 on secp256k1 (crate `cggmp21` 0.6).
//!
//! This is the only module that names `cggmp21`. Its maintainers advise
//! moving to CGGMP24; that swap replaces this file and nothing else (see
//! SECURITY.md). Everything here takes and returns serialised shares and
//! plain bytes, so callers never see a cggmp21 type.

use crate::reshare::{self, ReshareError};
use crate::session::{self, Party, Seat};
use cggmp21::generic_ec as ec04;
use cggmp21::generic_ec::{Point, Scalar};
use cggmp21::hd_wallet::Slip10;
use cggmp21::key_share::{DirtyIncompleteKeyShare, DirtyKeyInfo, IncompleteKeyShare, Validate, VssSetup};
use cggmp21::security_level::SecurityLevel128;
use cggmp21::supported_curves::Secp256k1;
use cggmp21::{DataToSign, ExecutionId, KeyShare};
use conclave_proto::{ErrorCode, RequestError};
use zeroize::Zeroizing;

/// Pre-generated safe primes for one party's Paillier key.
pub struct Primes(cggmp21::PregeneratedPrimes<SecurityLevel128>);

impl Primes {
    /// Generates a fresh pair of safe primes: seconds to minutes of CPU.
    pub fn generate() -> Primes {
        Primes(cggmp21::PregeneratedPrimes::generate(&mut rand_core::OsRng))
    }

    /// Serialises for sealing.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(serde_json::to_vec(&self.0).expect("primes serialise"))
    }

    /// Parses what [`Primes::to_bytes`] produced.
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
    seat.run_in(inbox, move |party: Party<cggmp21::key_refresh::msg::aux_only::Msg<sha2::Sha256, SecurityLevel128>>| {
        futures::executor::block_on(cggmp21::aux_info_gen(ExecutionId::new(&eid), i, n, primes.0).start(&mut rand_core::OsRng, party))
            .map(|aux| Zeroizing::new(serde_json::to_vec(&aux).expect("aux info serialises")))
    })
    .await
}

/// Public output of keygen.
pub struct KeygenOutput {
    /// 33-byte compressed SEC1 public key.
    pub public_key: Vec<u8>,
    /// BIP-32 serialisation of the key and its chain code.
    pub xpub: String,
    /// The complete serialised key share (core share plus aux info).
    pub share: Zeroizing<Vec<u8>>,
}

/// Runs threshold keygen (HD-enabled) and completes the share with the
/// committee's aux info.
pub async fn keygen(seat: Seat<'_>, threshold: u16, aux: Zeroizing<Vec<u8>>) -> Result<KeygenOutput, RequestError> {
    let (i, n, eid) = (seat.index(), seat.parties(), seat.execution());
    let incomplete = seat
        .run(move |party: Party<cggmp21::keygen::ThresholdMsg<Secp256k1, SecurityLevel128, sha2::Sha256>>| {
            futures::executor::block_on(
                cggmp21::keygen::<Secp256k1>(ExecutionId::new(&eid), i, n).set_threshold(threshold).hd_wallet(true).start(&mut rand_core::OsRng, party),
            )
        })
        .await?;
    let aux: cggmp21::key_share::AuxInfo<SecurityLevel128> = serde_json::from_slice(&aux).map_err(|e| internal("stored aux info does not decode", e))?;
    let share: KeyShare<Secp256k1> = KeyShare::from_parts((incomplete, aux)).map_err(|e| internal("key share does not match the committee's aux info", e))?;
    let chain_code = share.chain_code.ok_or_else(|| internal("keygen", "no chain code"))?;
    let public_key: [u8; 33] = share.shared_public_key.to_bytes(true).as_ref().try_into().expect("compressed secp256k1 point");
    Ok(KeygenOutput {
        public_key: public_key.to_vec(),
        xpub: conclave_proto::xpub::Xpub { public_key, chain_code }.encode(),
        share: Zeroizing::new(serde_json::to_vec(&share).expect("key share serialises")),
    })
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

/// Signs a 32-byte digest with the share, as signer `spec` (parties in
/// keygen-index order, `indexes_at_keygen` their keygen indexes).
pub async fn sign(seat: Seat<'_>, indexes_at_keygen: Vec<u16>, share: &[u8], digest: [u8; 32], path: Vec<u32>) -> Result<SignOutput, RequestError> {
    let share: KeyShare<Secp256k1> = serde_json::from_slice(share).map_err(|e| internal("sealed share does not decode", e))?;
    let public_key = if path.is_empty() {
        share.shared_public_key.into_inner()
    } else {
        share
            .derive_child_public_key::<Slip10, _>(path.iter().copied())
            .map_err(|e| RequestError::new(ErrorCode::Malformed, format!("derivation path: {e}")))?
            .public_key
    };
    let (i, eid) = (seat.index(), seat.execution());
    let scalar = Scalar::<Secp256k1>::from_be_bytes_mod_order(digest);
    // Round 4 carries this signer's partial signature.
    let releases: fn(&cggmp21::signing::msg::Msg<Secp256k1, sha2::Sha256>) -> bool = |m| matches!(m, cggmp21::signing::msg::Msg::Round4(_));
    let signature = seat
        .run_signing(releases, move |party: Party<cggmp21::signing::msg::Msg<Secp256k1, sha2::Sha256>>| {
            let builder = cggmp21::signing(ExecutionId::new(&eid), i, &indexes_at_keygen, &share);
            let builder = if path.is_empty() { builder } else { builder.set_derivation_path(path.iter().copied()).map_err(|e| e.to_string())? };
            futures::executor::block_on(builder.sign(&mut rand_core::OsRng, party, DataToSign::from_scalar(scalar))).map_err(|e| e.to_string())
        })
        .await?
        .normalize_s();
    if signature.verify(&public_key, &DataToSign::from_scalar(scalar)).is_err() {
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

/// Signs `digest` with the given parties' serialised shares in this one
/// process (round-based's simulator, no network, no link): the baseline the
/// benchmark compares the cluster against. `indexes_at_keygen` are the
/// signers' keygen indexes, ascending, one per share.
pub fn sign_in_process(shares: &[Zeroizing<Vec<u8>>], indexes_at_keygen: &[u16], digest: [u8; 32]) -> Result<Vec<u8>, RequestError> {
    let shares: Vec<KeyShare<Secp256k1>> =
        shares.iter().map(|s| serde_json::from_slice(s).map_err(|e| internal("share does not decode", e))).collect::<Result<_, _>>()?;
    let data = DataToSign::from_scalar(Scalar::<Secp256k1>::from_be_bytes_mod_order(digest));
    let eid_bytes = rand_eid();
    let signature = round_based::sim::run(shares.len() as u16, |i, party| {
        let share = &shares[usize::from(i)];
        let eid = ExecutionId::new(&eid_bytes);
        async move { cggmp21::signing(eid, i, indexes_at_keygen, share).sign(&mut rand_core::OsRng, party, data).await }
    })
    .map_err(|e| internal("simulation", e))?
    .expect_ok()
    .expect_eq()
    .normalize_s();
    let mut rs = vec![0u8; 64];
    signature.write_to_slice(&mut rs);
    Ok(rs)
}

fn rand_eid() -> [u8; 32] {
    use rand_core::RngCore;
    let mut b = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut b);
    b
}

// Resharing (issue 6) computes on generic-ec 0.5 and key-share 0.7 (see
// `reshare`); cggmp21 0.6 is on generic-ec 0.4 and key-share 0.6. Shares
// cross between the two here, field by field, by the curve's canonical
// encodings (SEC1 compressed points, big-endian scalars), and are validated
// again on each side.

type ReshareCurve = reshare::Secp256k1;

const SHARE_ENCODING: ReshareError = ReshareError::ShareEncoding("ecdsa key share");

/// A stored ECDSA share (the complete key share sealed in a
/// [`crate::share::ShareRecord`]) as resharing's dealer reads it. Only the
/// core share is read: aux info stays with the old committee.
pub fn reshare_source(stored: &[u8]) -> Result<reshare::KeyShare<ReshareCurve>, ReshareError> {
    #[derive(serde::Deserialize)]
    struct Stored {
        core: DirtyIncompleteKeyShare<Secp256k1>,
    }
    let stored: Stored = serde_json::from_slice(stored).map_err(|_| SHARE_ENCODING)?;
    let core = stored.core.validate().map_err(|_| SHARE_ENCODING)?;
    core_to_reshare(&core)
}

fn core_to_reshare(core: &IncompleteKeyShare<Secp256k1>) -> Result<reshare::KeyShare<ReshareCurve>, ReshareError> {
    let point = |p: &ec04::NonZero<ec04::Point<Secp256k1>>| {
        generic_ec::Point::from_bytes(p.to_bytes(true)).ok().and_then(generic_ec::NonZero::from_point).ok_or(SHARE_ENCODING)
    };
    let scalar = |s: &ec04::NonZero<ec04::Scalar<Secp256k1>>| {
        generic_ec::Scalar::from_be_bytes(s.to_be_bytes()).ok().and_then(generic_ec::NonZero::from_scalar).ok_or(SHARE_ENCODING)
    };
    let vss = core.vss_setup.as_ref().ok_or(ReshareError::NotThreshold)?;
    let x = Zeroizing::new(AsRef::<ec04::Scalar<Secp256k1>>::as_ref(&core.x).to_be_bytes().to_vec());
    let x = generic_ec::SecretScalar::from_be_bytes(&x).ok().and_then(generic_ec::NonZero::from_secret_scalar).ok_or(SHARE_ENCODING)?;
    let converted = key_share::DirtyCoreKeyShare {
        i: core.i,
        key_info: key_share::DirtyKeyInfo {
            curve: generic_ec::serde::CurveName::new(),
            shared_public_key: point(&core.shared_public_key)?,
            public_shares: core.public_shares.iter().map(point).collect::<Result<_, _>>()?,
            vss_setup: Some(key_share::VssSetup { min_signers: vss.min_signers, I: vss.I.iter().map(scalar).collect::<Result<_, _>>()? }),
        },
        x,
    };
    let validated = key_share::Validate::validate(converted).map_err(|_| SHARE_ENCODING)?;
    Ok(reshare::KeyShare { core: validated, chain_code: core.chain_code })
}

/// Serialises a new member's reshared share as cggmp21's incomplete key
/// share: it signs only once [`complete_reshared`] joins it with the new
/// committee's aux info.
pub fn reshared(share: reshare::KeyShare<ReshareCurve>) -> Result<Zeroizing<Vec<u8>>, ReshareError> {
    let point = |p: &generic_ec::NonZero<generic_ec::Point<ReshareCurve>>| {
        ec04::Point::from_bytes(p.to_bytes(true)).ok().and_then(ec04::NonZero::from_point).ok_or(SHARE_ENCODING)
    };
    let scalar = |s: &generic_ec::NonZero<generic_ec::Scalar<ReshareCurve>>| {
        ec04::Scalar::from_be_bytes(s.to_be_bytes()).ok().and_then(ec04::NonZero::from_scalar).ok_or(SHARE_ENCODING)
    };
    let core = &share.core;
    let vss = core.vss_setup.as_ref().ok_or(ReshareError::NotThreshold)?;
    let x = Zeroizing::new(AsRef::<generic_ec::SecretScalar<ReshareCurve>>::as_ref(&core.x).to_be_bytes().as_nonsecret_bytes().to_vec());
    let mut x = ec04::Scalar::from_be_bytes(&*x).map_err(|_| SHARE_ENCODING)?;
    let x = ec04::NonZero::from_secret_scalar(ec04::SecretScalar::new(&mut x)).ok_or(SHARE_ENCODING)?;
    let converted = DirtyIncompleteKeyShare::<Secp256k1> {
        i: core.i,
        key_info: DirtyKeyInfo {
            curve: ec04::serde::CurveName::new(),
            shared_public_key: point(&core.shared_public_key)?,
            public_shares: core.public_shares.iter().map(point).collect::<Result<_, _>>()?,
            vss_setup: Some(VssSetup { min_signers: vss.min_signers, I: vss.I.iter().map(scalar).collect::<Result<_, _>>()? }),
            chain_code: share.chain_code,
        },
        x,
    };
    let converted = converted.validate().map_err(|_| ReshareError::InvalidNewShare)?;
    Ok(Zeroizing::new(serde_json::to_vec(&converted).expect("key shares serialise")))
}

/// Joins a reshared incomplete share with the new committee's aux info
/// into the complete share that is sealed and signs, in the format
/// [`keygen`] produces.
pub fn complete_reshared(incomplete: &[u8], aux: &[u8]) -> Result<Zeroizing<Vec<u8>>, RequestError> {
    let incomplete: IncompleteKeyShare<Secp256k1> = serde_json::from_slice(incomplete).map_err(|e| internal("reshared share does not decode", e))?;
    let aux: cggmp21::key_share::AuxInfo<SecurityLevel128> = serde_json::from_slice(aux).map_err(|e| internal("aux info does not decode", e))?;
    let share: KeyShare<Secp256k1> =
        KeyShare::from_parts((incomplete, aux)).map_err(|e| internal("reshared share does not match the committee's aux info", e))?;
    Ok(Zeroizing::new(serde_json::to_vec(&share).expect("key share serialises")))
}

/// Test fixtures for resharing: cggmp21's trusted dealer and aux data,
/// kept here so that only this module names cggmp21.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// A t-of-n HD key's shares from cggmp21's trusted dealer, as resharing
    /// reads them.
    pub fn dealt(n: u16, t: u16) -> Vec<reshare::KeyShare<ReshareCurve>> {
        cggmp21::trusted_dealer::builder::<Secp256k1, SecurityLevel128>(n)
            .set_threshold(Some(t))
            .hd_wallet(true)
            .generate_core_shares(&mut rand_core::OsRng)
            .unwrap()
            .iter()
            .map(|core| core_to_reshare(core).unwrap())
            .collect()
    }

    /// Aux info for a committee of four (what the new committee's aux
    /// info round would produce), serialised as sealed. Read from a
    /// test-only fixture: finding its eight safe primes takes minutes on two
    /// cores. Never use these keys for anything else; the ignored test
    /// `write_aux_fixture` makes a new file.
    pub fn aux_of_four() -> Vec<Zeroizing<Vec<u8>>> {
        let all: Vec<serde_json::Value> = serde_json::from_slice(include_bytes!("testdata/aux-info-4.json")).expect("the fixture decodes");
        all.iter().map(|a| Zeroizing::new(serde_json::to_vec(a).unwrap())).collect()
    }

    /// Writes `testdata/aux-info-4.json` (cggmp21's trusted dealer).
    #[test]
    #[ignore = "writes the fixture; run by hand: cargo test -p conclave-enclave --lib -- --ignored write_aux_fixture"]
    fn write_aux_fixture() {
        let aux = cggmp21::trusted_dealer::generate_aux_data::<SecurityLevel128, _>(&mut rand_core::OsRng, 4, false, false).unwrap();
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/testdata/aux-info-4.json");
        std::fs::write(path, serde_json::to_vec(&aux).unwrap()).unwrap();
    }

    /// The root xpub a complete stored share reports, as keygen does.
    pub fn xpub(stored: &[u8]) -> String {
        let share: KeyShare<Secp256k1> = serde_json::from_slice(stored).unwrap();
        let public_key = share.shared_public_key.to_bytes(true).as_ref().try_into().unwrap();
        conclave_proto::xpub::Xpub { public_key, chain_code: share.chain_code.unwrap() }.encode()
    }
}
