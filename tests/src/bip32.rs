//! BIP-32 public derivation written from the specification, independent of
//! both the enclave (cggmp21's SLIP-10) and the SDK, so that tests cross-check
//! them against the standard rather than against themselves.

use hmac::{Hmac, Mac};
use k256::elliptic_curve::sec1::ToEncodedPoint;
use k256::{ProjectivePoint, PublicKey, Scalar};

/// Parses an xpub into (public key SEC1 compressed, chain code).
pub fn parse_xpub(xpub: &str) -> ([u8; 33], [u8; 32]) {
    let x = conclave_proto::xpub::Xpub::decode(xpub).expect("a valid xpub");
    (x.public_key, x.chain_code)
}

/// CKDpub along a non-hardened path.
pub fn derive(mut key: [u8; 33], mut chain: [u8; 32], path: &[u32]) -> [u8; 33] {
    for &i in path {
        assert!(i < 1 << 31, "non-hardened only");
        let mut mac = Hmac::<sha2::Sha512>::new_from_slice(&chain).unwrap();
        mac.update(&key);
        mac.update(&i.to_be_bytes());
        let out = mac.finalize().into_bytes();
        let tweak: Scalar = Option::from(<Scalar as k256::elliptic_curve::PrimeField>::from_repr(<[u8; 32]>::try_from(&out[..32]).unwrap().into()))
            .expect("tweak below the group order");
        let parent = PublicKey::from_sec1_bytes(&key).unwrap();
        let child = ProjectivePoint::GENERATOR * tweak + parent.to_projective();
        let child = PublicKey::from_affine(child.to_affine()).expect("child is not the identity");
        key = child.to_encoded_point(true).as_bytes().try_into().unwrap();
        chain = out[32..].try_into().unwrap();
    }
    key
}

#[cfg(test)]
mod tests {
    /// BIP-32 test vector 1: the public-only step from m/0H/1/2H to
    /// m/0H/1/2H/2.
    #[test]
    fn matches_the_bip32_test_vector() {
        let parent = "xpub6D4BDPcP2GT577Vvch3R8wDkScZWzQzMMUm3PWbmWvVJrZwQY4VUNgqFJPMM3No2dFDFGTsxxpG5uJh7n7epu4trkrX7x7DogT5Uv6fcLW5";
        let child = "xpub6FHa3pjLCk84BayeJxFW2SP4XRrFd1JYnxeLeU8EqN3vDfZmbqBqaGJAyiLjTAwm6ZLRQUMv1ZACTj37sR62cfN7fe5JnJ7dh8zL4fiyLHV";
        let (k, c) = super::parse_xpub(parent);
        let (want, _) = super::parse_xpub(child);
        assert_eq!(super::derive(k, c, &[2]), want);
    }
}
