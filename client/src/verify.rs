//! Signature verification. The client trusts no signature it has not
//! checked itself.

use crate::ClientError;
use conclave_proto::request::SignPayload;
use conclave_proto::result::{KeygenResult, SignResult};
use conclave_proto::Scheme;
use sha2::Digest;

/// The 32-byte digest an ECDSA request signs.
pub fn ecdsa_digest(payload: &SignPayload) -> [u8; 32] {
    match payload {
        SignPayload::Digest(d) => d.as_slice().try_into().unwrap_or([0; 32]),
        SignPayload::Message(m) => sha2::Sha256::digest(m).into(),
        SignPayload::EthEip1559(tx) => sha3::Keccak256::digest(tx).into(),
    }
}

/// The public key a signature for `path` must verify under: the wallet key,
/// or its BIP-32 child derived from the wallet's xpub.
pub fn expected_key(wallet: &KeygenResult, path: &[u32]) -> Result<Vec<u8>, ClientError> {
    if path.is_empty() {
        return Ok(wallet.public_key.clone());
    }
    use hd_wallet::HdWallet;
    let xpub = wallet.xpub.as_deref().ok_or_else(|| ClientError::BadResult("the wallet has no xpub".into()))?;
    let xpub = conclave_proto::xpub::Xpub::decode(xpub).map_err(|e| ClientError::BadResult(e.to_string()))?;
    let public_key = generic_ec::Point::<generic_ec::curves::Secp256k1>::from_bytes(xpub.public_key)
        .map_err(|_| ClientError::BadResult("the xpub's key is not a curve point".into()))?;
    let parent = hd_wallet::ExtendedPublicKey { public_key, chain_code: xpub.chain_code };
    let indexes = path
        .iter()
        .map(|&i| hd_wallet::NonHardenedIndex::try_from(i).map_err(|_| ClientError::BadResult(format!("hardened index {i}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let child = hd_wallet::Slip10::derive_child_public_key_with_path(&parent, indexes);
    Ok(child.public_key.to_bytes(true).to_vec())
}

/// Checks a signature result against the wallet and the request.
pub fn check(wallet: &KeygenResult, payload: &SignPayload, path: &[u32], sig: &SignResult) -> Result<(), ClientError> {
    let bad = |m: &str| Err(ClientError::BadSignature(m.to_string()));
    let key = expected_key(wallet, path)?;
    if sig.public_key != key {
        return bad("signed under another key than the wallet's");
    }
    match wallet.scheme {
        Scheme::Ecdsa => {
            use k256::ecdsa::signature::hazmat::PrehashVerifier;
            use k256::ecdsa::{RecoveryId, Signature, VerifyingKey};
            let digest = ecdsa_digest(payload);
            let vk = VerifyingKey::from_sec1_bytes(&key).map_err(|e| ClientError::BadSignature(e.to_string()))?;
            let s = Signature::from_slice(&sig.signature).map_err(|e| ClientError::BadSignature(e.to_string()))?;
            if s.normalize_s().is_some() {
                return bad("S is not low");
            }
            if vk.verify_prehash(&digest, &s).is_err() {
                return bad("ECDSA verification failed");
            }
            let rid = sig.recovery_id.and_then(RecoveryId::from_byte).ok_or_else(|| ClientError::BadSignature("no valid recovery id".into()))?;
            match VerifyingKey::recover_from_prehash(&digest, &s, rid) {
                Ok(k) if k == vk => Ok(()),
                _ => bad("the recovery id does not recover the key"),
            }
        }
        Scheme::Eddsa => {
            let message = match payload {
                SignPayload::Digest(m) | SignPayload::Message(m) => m,
                SignPayload::EthEip1559(_) => return bad("an Ethereum transaction is not an EdDSA payload"),
            };
            let vk = ed25519_dalek::VerifyingKey::from_bytes(key.as_slice().try_into().map_err(|_| ClientError::BadSignature("key length".into()))?)
                .map_err(|e| ClientError::BadSignature(e.to_string()))?;
            let s = ed25519_dalek::Signature::from_slice(&sig.signature).map_err(|e| ClientError::BadSignature(e.to_string()))?;
            vk.verify_strict(message, &s).map_err(|_| ClientError::BadSignature("Ed25519 strict verification failed".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conclave_proto::{NodeId, WalletId};
    use k256::ecdsa::SigningKey;

    fn wallet(public_key: Vec<u8>) -> KeygenResult {
        KeygenResult {
            wallet: WalletId::new("w").unwrap(),
            scheme: Scheme::Ecdsa,
            public_key,
            xpub: None,
            version: 1,
            threshold: 2,
            committee: vec![NodeId::new("a").unwrap()],
        }
    }

    fn signed(sk: &SigningKey, digest: &[u8; 32]) -> SignResult {
        let (s, rid) = sk.sign_prehash_recoverable(digest).unwrap();
        SignResult {
            wallet: WalletId::new("w").unwrap(),
            scheme: Scheme::Ecdsa,
            signature: s.to_bytes().to_vec(),
            recovery_id: Some(rid.to_byte()),
            public_key: sk.verifying_key().to_encoded_point(true).as_bytes().to_vec(),
            path: vec![],
            signers: vec![],
            version: 1,
        }
    }

    #[test]
    fn accepts_good_ecdsa_and_refuses_every_kind_of_bad() {
        let sk = SigningKey::from_slice(&[7; 32]).unwrap();
        let w = wallet(sk.verifying_key().to_encoded_point(true).as_bytes().to_vec());
        let digest = [9u8; 32];
        let payload = SignPayload::Digest(digest.to_vec());
        let good = signed(&sk, &digest);
        check(&w, &payload, &[], &good).unwrap();

        let mut other_message = good.clone();
        other_message.signature[40] ^= 1;
        assert!(check(&w, &payload, &[], &other_message).is_err());

        let mut wrong_rid = good.clone();
        wrong_rid.recovery_id = Some(good.recovery_id.unwrap() ^ 1);
        assert!(check(&w, &payload, &[], &wrong_rid).is_err());

        // The same signature with S negated verifies mathematically but is high-S.
        let s = k256::ecdsa::Signature::from_slice(&good.signature).unwrap();
        let (r, lo) = s.split_scalars();
        let high = k256::ecdsa::Signature::from_scalars(r, -*lo).unwrap();
        let mut high_s = good.clone();
        high_s.signature = high.to_bytes().to_vec();
        assert!(matches!(check(&w, &payload, &[], &high_s), Err(ClientError::BadSignature(_))));

        let stranger = SigningKey::from_slice(&[8; 32]).unwrap();
        assert!(check(&w, &payload, &[], &signed(&stranger, &digest)).is_err());
    }

    #[test]
    fn derives_children_as_bip32_does() {
        // BIP-32 test vector 1, m/0H/1/2H -> m/0H/1/2H/2 (public derivation).
        let parent = conclave_proto::xpub::Xpub::decode(
            "xpub6D4BDPcP2GT577Vvch3R8wDkScZWzQzMMUm3PWbmWvVJrZwQY4VUNgqFJPMM3No2dFDFGTsxxpG5uJh7n7epu4trkrX7x7DogT5Uv6fcLW5",
        )
        .unwrap();
        let child = conclave_proto::xpub::Xpub::decode(
            "xpub6FHa3pjLCk84BayeJxFW2SP4XRrFd1JYnxeLeU8EqN3vDfZmbqBqaGJAyiLjTAwm6ZLRQUMv1ZACTj37sR62cfN7fe5JnJ7dh8zL4fiyLHV",
        )
        .unwrap();
        let mut w = wallet(parent.public_key.to_vec());
        w.xpub = Some(parent.encode());
        assert_eq!(expected_key(&w, &[2]).unwrap(), child.public_key.to_vec());
    }
}
