//! Nitro custody end to end, but for the two parts that exist only on AWS:
//! the NSM (the dev CA's simulated one stands in) and KMS (a stand-in
//! below). The enclave's real code runs: its link to a host, its TLS and
//! SigV4 client, the Recipient flow, the CMS envelope, the sealing.

use base64::Engine;
use bytes::Bytes;
use conclave_attest::sim::DevCa;
use conclave_attest::{Policy, TrustedRoot};
use conclave_enclave::attestation::{self, Nsm};
use conclave_enclave::custody::{Custody, CustodyError};
use conclave_enclave::kms::KmsError;
use conclave_enclave::link;
use conclave_enclave::nitro::NitroConfig;
use conclave_proto::link::{AwsCredentials, FromEnclave, LinkAddr, StoredBlob, ToEnclave};
use conclave_proto::{NodeId, PROTOCOL_VERSION};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rand_core::RngCore;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::io::AsyncWriteExt;

const REGION: &str = "eu-west-1";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(v: &Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap_or_default()).unwrap_or_default()
}

/// A stand-in for AWS KMS (which exists only on AWS), named as such: the
/// two calls of the Recipient flow over TLS, with the key policy reduced to
/// its point: a data key only for a document that chains to `root` and shows
/// `pcr0`, only to its RSA key, and a wrapped key only under the encryption
/// context it was made with.
struct KmsStandIn {
    root: TrustedRoot,
    pcr0: Vec<u8>,
    keys: Mutex<HashMap<Vec<u8>, ([u8; 32], Value)>>,
    calls: Mutex<Vec<String>>,
}

fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let n = content.len();
    let mut out = vec![tag];
    match n {
        0..=127 => out.push(n as u8),
        128..=255 => out.extend([0x81, n as u8]),
        _ => out.extend([0x82, (n >> 8) as u8, n as u8]),
    }
    out.extend_from_slice(content);
    out
}

/// `CiphertextForRecipient`: `key` in CMS EnvelopedData for `recipient`.
fn envelope(recipient: &rsa::RsaPublicKey, key: &[u8; 32]) -> Vec<u8> {
    use aes::cipher::{block_padding::Pkcs7, BlockEncryptMut, KeyIvInit};
    let (mut cek, mut iv) = ([0u8; 32], [0u8; 16]);
    rand_core::OsRng.fill_bytes(&mut cek);
    rand_core::OsRng.fill_bytes(&mut iv);
    let content = cbc::Encryptor::<aes::Aes256>::new(&cek.into(), &iv.into()).encrypt_padded_vec_mut::<Pkcs7>(key);
    let encrypted_key = recipient.encrypt(&mut rand_core::OsRng, rsa::Oaep::new::<sha2::Sha256>(), &cek).unwrap();
    let oid = |bytes: &[u8]| tlv(0x06, bytes);
    let ktri = tlv(0x30, &[tlv(0x02, &[2]), tlv(0x80, &[7; 20]), tlv(0x30, &oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07])), tlv(0x04, &encrypted_key)].concat());
    let algorithm = tlv(0x30, &[oid(&[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a]), tlv(0x04, &iv)].concat());
    let eci = tlv(0x30, &[oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01]), algorithm, tlv(0x80, &content)].concat());
    let enveloped = tlv(0x30, &[tlv(0x02, &[2]), tlv(0x31, &ktri), eci].concat());
    tlv(0x30, &[oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03]), tlv(0xa0, &enveloped)].concat())
}

impl KmsStandIn {
    fn answer(&self, target: &str, authorization: &str, request: &Value) -> (u16, Value) {
        use rsa::pkcs8::DecodePublicKey;
        let error = |kind: &str, message: &str| (400, json!({ "__type": kind, "message": message }));
        let operation = target.strip_prefix("TrentService.").unwrap_or_default();
        self.calls.lock().unwrap().push(operation.to_string());
        if !authorization.starts_with("AWS4-HMAC-SHA256 Credential=ASIAEXAMPLE/") || !authorization.contains(&format!("/{REGION}/kms/aws4_request")) {
            return error("UnrecognizedClientException", "bad signature");
        }
        let document = unb64(&request["Recipient"]["AttestationDocument"]);
        let policy = Policy { root: self.root.clone(), pcrs: BTreeMap::from([(0, self.pcr0.clone())]), nonce: None, at: SystemTime::now(), allow_debug: false };
        let Ok(verified) = conclave_attest::verify(&document, &policy) else {
            return error("AccessDeniedException", "the attestation document does not satisfy the key policy");
        };
        let recipient = rsa::RsaPublicKey::from_public_key_der(verified.public_key.as_deref().unwrap_or_default()).unwrap();
        let context = request["EncryptionContext"].clone();
        match operation {
            "GenerateDataKey" => {
                let (mut key, mut wrapped) = ([0u8; 32], vec![0u8; 24]);
                rand_core::OsRng.fill_bytes(&mut key);
                rand_core::OsRng.fill_bytes(&mut wrapped);
                self.keys.lock().unwrap().insert(wrapped.clone(), (key, context));
                (200, json!({ "CiphertextBlob": b64(&wrapped), "CiphertextForRecipient": b64(&envelope(&recipient, &key)), "KeyId": request["KeyId"] }))
            }
            "Decrypt" => match self.keys.lock().unwrap().get(&unb64(&request["CiphertextBlob"])) {
                Some((key, made_with)) if *made_with == context => (200, json!({ "CiphertextForRecipient": b64(&envelope(&recipient, key)), "KeyId": request["KeyId"] })),
                _ => error("InvalidCiphertextException", "no such ciphertext under this context"),
            },
            _ => error("UnknownOperationException", operation),
        }
    }
}

/// Serves the stand-in over TLS on a Unix socket (the enclave's
/// `kms_proxy`), under a throwaway CA written to `ca.pem` in `dir`.
fn serve_kms(dir: &Path, kms: Arc<KmsStandIn>) -> (LinkAddr, PathBuf) {
    use tokio_rustls::rustls;
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec![format!("kms.{REGION}.amazonaws.com")]).unwrap().signed_by(&key, &ca, &ca_key).unwrap();
    let ca_file = dir.join("kms-ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let path = dir.join("kms.sock");
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (acceptor, kms) = (acceptor.clone(), kms.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let kms = kms.clone();
                    async move {
                        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                        let (target, authorization) = (header("x-amz-target"), header("authorization"));
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let (status, answer) = kms.answer(&target, &authorization, &serde_json::from_slice(&body).unwrap_or(Value::Null));
                        Ok::<_, std::convert::Infallible>(hyper::Response::builder().status(status).body(Full::new(Bytes::from(answer.to_string()))).unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service).await;
            });
        }
    });
    (LinkAddr::Unix(path), ca_file)
}

/// The host's side of the link during custody: its blob store, and the
/// credentials it hands over (or why it has none).
#[derive(Clone)]
struct Host {
    store: Arc<Mutex<HashMap<String, Vec<StoredBlob>>>>,
    credentials: Result<AwsCredentials, String>,
}

impl Host {
    async fn serve(self, addr: LinkAddr) {
        let stream = conclave_proto::transport::connect(&addr).await.unwrap();
        let (mut r, mut w) = tokio::io::split(stream);
        w.write_all(&conclave_proto::link::encode_frame(&ToEnclave::Hello { v: PROTOCOL_VERSION })).await.unwrap();
        while let Ok(Ok(frame)) = conclave_proto::link::read_frame::<FromEnclave, _>(&mut r).await {
            let answer = match frame {
                FromEnclave::Load { call, slot } => ToEnclave::Loaded { call, blob: self.store.lock().unwrap().get(&slot.path()).and_then(|v| v.last().cloned()) },
                FromEnclave::Store { call, slot, blob } => {
                    self.store.lock().unwrap().entry(slot.path()).or_default().push(blob);
                    ToEnclave::Stored { call, error: None }
                }
                FromEnclave::Credentials { call } => ToEnclave::Credentials { call, result: self.credentials.clone() },
                _ => return,
            };
            w.write_all(&conclave_proto::link::encode_frame(&answer)).await.unwrap();
        }
    }

    fn paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = self.store.lock().unwrap().iter().flat_map(|(p, v)| v.iter().map(move |b| format!("{p}@{}", b.version))).collect();
        paths.sort();
        paths
    }
}

struct Setup {
    dir: tempfile::TempDir,
    node: NodeId,
    nitro: NitroConfig,
    ca_file: PathBuf,
    kms: Arc<KmsStandIn>,
    starts: usize,
}

impl Setup {
    /// A node, a dev CA, and KMS whose key policy admits `pcr0` (None: this
    /// test binary's own measurement, i.e. the image's).
    fn new(pcr0: Option<Vec<u8>>) -> Setup {
        use sha2::Digest;
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::generate().unwrap();
        let ca_file = dir.path().join("dev-ca");
        std::fs::write(&ca_file, ca.to_file()).unwrap();
        let own = sha2::Sha384::digest(std::fs::read(std::env::current_exe().unwrap()).unwrap()).to_vec();
        let kms = Arc::new(KmsStandIn { root: ca.root().clone(), pcr0: pcr0.unwrap_or(own), keys: Mutex::default(), calls: Mutex::default() });
        let (proxy, kms_ca) = serve_kms(dir.path(), kms.clone());
        let nitro = NitroConfig {
            kms_key_id: "alias/conclave-node-1".into(),
            kms_region: REGION.into(),
            kms_proxy: proxy,
            kms_ca_file: Some(kms_ca),
            root_ca_file: None,
            expected_pcrs: BTreeMap::new(),
            allow_debug_enclaves: false,
        };
        Setup { dir, node: NodeId::new("node-1").unwrap(), nitro, ca_file, kms, starts: 0 }
    }

    /// One start of the enclave: custody through a fresh link to `host`.
    async fn start(&mut self, host: &Host) -> Result<Custody, CustodyError> {
        self.starts += 1;
        let addr = LinkAddr::Unix(self.dir.path().join(format!("link-{}.sock", self.starts)));
        let mut listener = link::bind(&addr).unwrap();
        let serving = tokio::spawn(host.clone().serve(addr.clone()));
        let mut conn = link::accept(&mut listener, &addr).await.unwrap();
        let nsm: Nsm = attestation::simulated(&self.ca_file, &self.node).unwrap();
        let custody = Custody::unlock_nitro(&self.node, &self.nitro, nsm, &mut conn).await;
        serving.abort();
        custody
    }

    fn calls(&self) -> Vec<String> {
        self.kms.calls.lock().unwrap().clone()
    }
}

fn host() -> Host {
    let credentials = AwsCredentials { access_key_id: "ASIAEXAMPLE".into(), secret_access_key: "secret".into(), session_token: Some("token".into()) };
    Host { store: Arc::default(), credentials: Ok(credentials) }
}

#[tokio::test]
async fn first_start_makes_the_seal_key_and_identity_and_every_later_start_gets_them_back() {
    let mut setup = Setup::new(None);
    let host = host();
    let first = setup.start(&host).await.unwrap();
    assert_eq!(setup.calls(), ["GenerateDataKey"]);
    assert_eq!(host.paths(), ["custody/identity@1", "custody/seal-key@1"]);
    let identity = first.keys.identity();
    assert_eq!(identity.mode, conclave_proto::link::Mode::Nitro);

    // A restart: the same identity, by Decrypt of the wrapped key, and
    // nothing new in the store.
    let second = setup.start(&host).await.unwrap();
    assert_eq!(setup.calls(), ["GenerateDataKey", "Decrypt"]);
    assert_eq!(second.keys.identity(), identity);
    assert_eq!(host.paths(), ["custody/identity@1", "custody/seal-key@1"]);
    assert_eq!(second.sealer.key_id(), first.sealer.key_id());
    // What one start sealed, the next opens.
    use conclave_enclave::seal::SealContext;
    let slot = conclave_proto::link::BlobSlot::Primes;
    let blob = first.sealer.seal(&SealContext::blob(&setup.node, &slot, 1), b"primes").unwrap();
    assert_eq!(&**second.sealer.open(&SealContext::blob(&setup.node, &slot, 1), &blob).unwrap(), b"primes");
    // The host keeps only ciphertext: the sealed identity does not carry
    // even the public signing key in the clear.
    let stored = host.store.lock().unwrap()["custody/identity"][0].sealed.clone();
    assert!(!stored.windows(32).any(|w| w == identity.sign_key), "the identity is sealed");
}

#[tokio::test]
async fn an_image_the_key_policy_does_not_name_gets_no_key_and_stores_nothing() {
    let mut setup = Setup::new(Some(vec![0x42; 48]));
    let host = host();
    match setup.start(&host).await.err() {
        Some(CustodyError::Kms(KmsError::Refused { operation: "GenerateDataKey", kind, .. })) => assert_eq!(kind, "AccessDeniedException"),
        other => panic!("{other:?}"),
    }
    assert!(host.paths().is_empty(), "nothing stored");
}

#[tokio::test]
async fn a_host_that_swaps_or_loses_the_wrapped_key_cannot_change_the_seal_key() {
    let mut setup = Setup::new(None);
    let host = host();
    let identity = setup.start(&host).await.unwrap().keys.identity();
    // Another node's wrapped key (same KMS key, other encryption context).
    let mut other = Setup { node: NodeId::new("node-2").unwrap(), ..Setup::new(None) };
    other.kms = setup.kms.clone();
    other.nitro = setup.nitro.clone();
    other.ca_file = setup.ca_file.clone();
    let other_host = self::host();
    other.start(&other_host).await.unwrap();
    let foreign = other_host.store.lock().unwrap()["custody/seal-key"][0].clone();
    let mine = host.store.lock().unwrap()["custody/seal-key"][0].clone();
    host.store.lock().unwrap().insert("custody/seal-key".into(), vec![foreign]);
    match setup.start(&host).await.err() {
        Some(CustodyError::Kms(KmsError::Refused { operation: "Decrypt", kind, .. })) => assert_eq!(kind, "InvalidCiphertextException"),
        other => panic!("{other:?}"),
    }
    // Lost: refused, rather than a new key that cannot open the identity.
    host.store.lock().unwrap().remove("custody/seal-key");
    assert!(matches!(setup.start(&host).await.err(), Some(CustodyError::SealKeyLost)));
    assert_eq!(host.paths(), ["custody/identity@1"], "nothing was written");
    // Put back: the node is itself again.
    host.store.lock().unwrap().insert("custody/seal-key".into(), vec![mine]);
    assert_eq!(setup.start(&host).await.unwrap().keys.identity(), identity);
}

#[tokio::test]
async fn a_host_without_credentials_is_a_typed_error() {
    let mut setup = Setup::new(None);
    let host = Host { credentials: Err("the instance has no IAM role".into()), ..host() };
    assert!(matches!(setup.start(&host).await.err(), Some(CustodyError::NoCredentials(reason)) if reason.contains("IAM role")));
    assert!(setup.calls().is_empty());
}
