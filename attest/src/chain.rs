//! The document's certificate chain: `cabundle[0]` (the root) signs
//! `cabundle[1]`, ..., the last of the bundle signs the leaf `certificate`,
//! whose key signs the document.
//!
//! Every Nitro certificate is ECDSA P-384 with SHA-384, so nothing else is
//! accepted. Path validation follows RFC 5280 section 6 as far as these
//! chains use it: names chain, issuers are CAs allowed to sign certificates
//! within their path length, no critical extension is left unread, and every
//! certificate is valid at the verification instant.

use crate::error::{AttestError, CertPosition};
use crate::root::TrustedRoot;
use p384::ecdsa::signature::Verifier;
use p384::ecdsa::{DerSignature, VerifyingKey};
use x509_cert::der::oid::db::rfc5912::{ECDSA_WITH_SHA_384, ID_CE_BASIC_CONSTRAINTS, ID_CE_KEY_USAGE};
use x509_cert::der::oid::AssociatedOid;
use x509_cert::der::referenced::OwnedToRef;
use x509_cert::der::{Decode, Header, Reader, SliceReader};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage};
use x509_cert::Certificate;

/// A certificate and the exact bytes its issuer signed.
pub(crate) struct Cert {
    pub(crate) position: CertPosition,
    pub(crate) der: Vec<u8>,
    pub(crate) cert: Certificate,
    /// Where `tbsCertificate` sits in `der`: its signature covers these bytes
    /// as they came, not a re-encoding of what we decoded.
    tbs: std::ops::Range<usize>,
}

impl Cert {
    /// Decodes a DER certificate (strict DER, no trailing bytes).
    pub(crate) fn parse(position: CertPosition, der: Vec<u8>) -> Result<Cert, AttestError> {
        let bad = |e: x509_cert::der::Error| AttestError::malformed(format!("{position}: not a DER X.509 certificate: {e}"));
        let cert = Certificate::from_der(&der).map_err(bad)?;
        let tbs = {
            let mut reader = SliceReader::new(&der).map_err(bad)?;
            Header::decode(&mut reader).map_err(bad)?;
            let start = usize::try_from(reader.position()).map_err(bad)?;
            start..start + reader.tlv_bytes().map_err(bad)?.len()
        };
        Ok(Cert { position, der, cert, tbs })
    }

    fn tbs_bytes(&self) -> &[u8] {
        &self.der[self.tbs.clone()]
    }

    /// The certificate's P-384 key.
    pub(crate) fn key(&self) -> Result<VerifyingKey, AttestError> {
        VerifyingKey::try_from(self.cert.tbs_certificate.subject_public_key_info.owned_to_ref())
            .map_err(|e| AttestError::chain(self.position, format!("key is not an ECDSA P-384 key: {e}")))
    }

    fn subject(&self) -> String {
        self.cert.tbs_certificate.subject.to_string()
    }

    fn extension<T: AssociatedOid + for<'a> Decode<'a>>(&self) -> Result<Option<T>, AttestError> {
        let extensions = self.cert.tbs_certificate.extensions.as_deref().unwrap_or_default();
        let mut found = extensions.iter().filter(|e| e.extn_id == T::OID);
        let Some(ext) = found.next() else {
            return Ok(None);
        };
        if found.next().is_some() {
            return Err(AttestError::chain(self.position, format!("extension {} appears twice", T::OID)));
        }
        T::from_der(ext.extn_value.as_bytes()).map(Some).map_err(|e| AttestError::chain(self.position, format!("extension {}: {e}", T::OID)))
    }

    /// RFC 5280 section 4.2: a critical extension we do not process makes the
    /// certificate unusable.
    fn no_unknown_critical_extension(&self) -> Result<(), AttestError> {
        let extensions = self.cert.tbs_certificate.extensions.as_deref().unwrap_or_default();
        match extensions.iter().find(|e| e.critical && e.extn_id != ID_CE_BASIC_CONSTRAINTS && e.extn_id != ID_CE_KEY_USAGE) {
            Some(e) => Err(AttestError::chain(self.position, format!("unsupported critical extension {}", e.extn_id))),
            None => Ok(()),
        }
    }

    /// The certificate may issue certificates with `cas_below` CA
    /// certificates under it before the leaf.
    fn may_issue(&self, cas_below: usize) -> Result<(), AttestError> {
        let refuse = |why: String| Err(AttestError::chain(self.position, why));
        match self.extension::<BasicConstraints>()? {
            Some(BasicConstraints { ca: true, path_len_constraint }) => {
                if let Some(max) = path_len_constraint {
                    if cas_below > usize::from(max) {
                        return refuse(format!("path length {max} allows fewer than the {cas_below} CAs below it"));
                    }
                }
            }
            _ => return refuse("issues a certificate but is not a CA (basicConstraints cA)".into()),
        }
        match self.extension::<KeyUsage>()? {
            Some(usage) if !usage.key_cert_sign() => refuse("key usage does not allow signing certificates".into()),
            _ => Ok(()),
        }
    }

    /// `issuer` signed this certificate.
    fn issued_by(&self, issuer: &Cert, issuer_key: &VerifyingKey) -> Result<(), AttestError> {
        let tbs = &self.cert.tbs_certificate;
        if tbs.issuer != issuer.cert.tbs_certificate.subject {
            return Err(AttestError::chain(self.position, format!("issuer {} is not the subject of {}", tbs.issuer, issuer.position)));
        }
        let algorithm = &self.cert.signature_algorithm;
        if algorithm.oid != ECDSA_WITH_SHA_384 || algorithm.parameters.is_some() || tbs.signature != *algorithm {
            return Err(AttestError::chain(self.position, format!("signature algorithm {}, expected ecdsa-with-SHA384", algorithm.oid)));
        }
        let signature = self
            .cert
            .signature
            .as_bytes()
            .and_then(|b| DerSignature::try_from(b).ok())
            .ok_or_else(|| AttestError::chain(self.position, "signature is not a DER ECDSA signature"))?;
        issuer_key
            .verify(self.tbs_bytes(), &signature)
            .map_err(|_| AttestError::chain(self.position, format!("signature does not verify under the key of {}", issuer.position)))
    }

    fn valid_at(&self, at_ms: u64) -> Result<(), AttestError> {
        let validity = &self.cert.tbs_certificate.validity;
        let ms = |t: x509_cert::time::Time| u64::try_from(t.to_unix_duration().as_millis()).unwrap_or(u64::MAX);
        let (not_before_ms, not_after_ms) = (ms(validity.not_before), ms(validity.not_after));
        if (not_before_ms..=not_after_ms).contains(&at_ms) {
            Ok(())
        } else {
            Err(AttestError::Expired { cert: self.position, subject: self.subject(), not_before_ms, not_after_ms, at_ms })
        }
    }
}

/// Checks that `bundle` and `leaf` chain up to `root`, and that all of them
/// are valid at `at_ms`.
///
/// Every signature is checked before any validity period, so that a forged
/// chain is reported as `chain` and only a genuine one as `expired`.
pub(crate) fn verify(bundle: &[Cert], leaf: &Cert, root: &TrustedRoot, at_ms: u64) -> Result<(), AttestError> {
    let first = bundle.first().ok_or_else(|| AttestError::malformed("cabundle is empty"))?;
    if first.der != root.der() {
        return Err(AttestError::chain(
            first.position,
            format!("root (SHA-256 {}) is not the trusted root (SHA-256 {})", hex::encode(crate::root::fingerprint(&first.der)), root.fingerprint_hex()),
        ));
    }
    let mut issuer = first;
    let mut issuer_key = issuer.key()?;
    issuer.no_unknown_critical_extension()?;
    for (i, cert) in bundle.iter().enumerate().skip(1).chain(std::iter::once((bundle.len(), leaf))) {
        // The CA certificates below the issuer: this one and those after it,
        // unless this is the leaf.
        issuer.may_issue(bundle.len() - i)?;
        cert.no_unknown_critical_extension()?;
        cert.issued_by(issuer, &issuer_key)?;
        if i < bundle.len() {
            issuer = cert;
            issuer_key = cert.key()?;
        }
    }
    if let Some(usage) = leaf.extension::<KeyUsage>()? {
        if !usage.digital_signature() {
            return Err(AttestError::chain(leaf.position, "key usage does not allow digital signatures"));
        }
    }
    bundle.iter().chain(std::iter::once(leaf)).try_for_each(|cert| cert.valid_at(at_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use p384::ecdsa::SigningKey;
    use rand_core::OsRng;
    use std::str::FromStr;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    use x509_cert::builder::{Builder, CertificateBuilder, Profile};
    use x509_cert::der::Encode;
    use x509_cert::name::Name;
    use x509_cert::serial_number::SerialNumber;
    use x509_cert::spki::SubjectPublicKeyInfoOwned;
    use x509_cert::time::Validity;

    struct Ca {
        name: Name,
        key: SigningKey,
        der: Vec<u8>,
    }

    fn name(cn: &str) -> Name {
        Name::from_str(&format!("CN={cn}")).unwrap()
    }

    /// A certificate for a new key named `cn`, signed by `issuer` (itself
    /// if `None`).
    fn issue(profile: Profile, cn: &str, issuer: Option<&Ca>) -> Ca {
        let key = SigningKey::random(&mut OsRng);
        let spki = SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).unwrap();
        let signer = issuer.map_or(&key, |ca| &ca.key);
        let validity = Validity::from_now(Duration::from_secs(3600)).unwrap();
        let builder = CertificateBuilder::new(profile, SerialNumber::from(7u32), validity, name(cn), spki, signer).unwrap();
        let der = builder.build::<DerSignature>().unwrap().to_der().unwrap();
        Ca { name: name(cn), key, der }
    }

    fn sub_ca(cn: &str, issuer: &Ca, path_len: Option<u8>) -> Ca {
        issue(Profile::SubCA { issuer: issuer.name.clone(), path_len_constraint: path_len }, cn, Some(issuer))
    }

    fn leaf(cn: &str, issuer_name: &Name, signer: &Ca) -> Ca {
        issue(Profile::Leaf { issuer: issuer_name.clone(), enable_key_agreement: false, enable_key_encipherment: false }, cn, Some(signer))
    }

    fn check(bundle: &[&Ca], leaf: &Ca) -> Result<(), AttestError> {
        let certs: Vec<Cert> = bundle.iter().enumerate().map(|(i, c)| Cert::parse(CertPosition::Bundle(i), c.der.clone()).unwrap()).collect();
        let leaf = Cert::parse(CertPosition::Leaf, leaf.der.clone()).unwrap();
        let root = TrustedRoot::from_der(bundle[0].der.clone()).unwrap();
        let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        verify(&certs, &leaf, &root, now_ms)
    }

    fn refused_at(result: Result<(), AttestError>, at: CertPosition, why: &str) {
        match result {
            Err(AttestError::Chain { cert, reason }) => {
                assert_eq!(cert, at, "{reason}");
                assert!(reason.contains(why), "{why:?} not in {reason:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_chain_through_an_intermediate_verifies() {
        let root = issue(Profile::Root, "root", None);
        let zone = sub_ca("zone", &root, Some(0));
        check(&[&root, &zone], &leaf("leaf", &zone.name, &zone)).expect("valid chain");
    }

    #[test]
    fn a_certificate_that_is_not_a_ca_cannot_issue() {
        let root = issue(Profile::Root, "root", None);
        let not_ca = leaf("not a CA", &root.name, &root);
        refused_at(check(&[&root, &not_ca], &leaf("leaf", &not_ca.name, &not_ca)), CertPosition::Bundle(1), "not a CA");
    }

    #[test]
    fn path_length_constraints_hold() {
        let root = issue(Profile::Root, "root", None);
        let zone = sub_ca("zone", &root, Some(0));
        let below = sub_ca("below", &zone, None);
        refused_at(check(&[&root, &zone, &below], &leaf("leaf", &below.name, &below)), CertPosition::Bundle(1), "path length 0");
    }

    #[test]
    fn names_must_chain_and_signatures_must_verify() {
        let root = issue(Profile::Root, "root", None);
        let zone = sub_ca("zone", &root, None);
        refused_at(check(&[&root, &zone], &leaf("leaf", &name("someone else"), &zone)), CertPosition::Leaf, "is not the subject");
        // Same names, other keys.
        let fake_root = issue(Profile::Root, "root", None);
        let fake_zone = sub_ca("zone", &fake_root, None);
        refused_at(check(&[&root, &zone], &leaf("leaf", &zone.name, &fake_zone)), CertPosition::Leaf, "does not verify");
        refused_at(check(&[&root, &fake_zone], &leaf("leaf", &zone.name, &fake_zone)), CertPosition::Bundle(1), "does not verify");
    }
}
