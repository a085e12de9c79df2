//! Nitro custody with the two parts that exist only on AWS replaced: the
//! NSM (the dev CA's simulated one stands in) and KMS (a stand-in below).
//! Shared by `tests/nitro_custody.rs` and `examples/nitro_start_cost.rs`.

use base64::Engine;
use bytes::Bytes;
use conclave_attest::sim::DevCa;
use conclave_attest::{Policy, TrustedRoot};
use conclave_enclave::attestation::{self, Nsm};
use conclave_enclave::custody::{Custody, CustodyError};
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

/// Wrapped key -> the data key and the encryption context it was made under.
type MadeKeys = HashMap<Vec<u8>, ([u8; 32], Value)>;

/// A stand-in for AWS KMS (which exists only on AWS), named as such: the
/// two calls of the Recipient flow over TLS, with the key policy reduced to
/// its point: a data key only for a document that chains to `root` and shows
/// `pcr0`, only to its RSA key, and a wrapped key only under the encryption
/// context it was made with.
pub struct KmsStandIn {
    root: TrustedRoot,
    pcr0: Vec<u8>,
    keys: Mutex<MadeKeys>,
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
    let ktri = tlv(
        0x30,
        &[tlv(0x02, &[2]), tlv(0x80, &[7; 20]), tlv(0x30, &oid(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x07])), tlv(0x04, &encrypted_key)].concat(),
    );
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
                Some((key, made_with)) if *made_with == context => {
                    (200, json!({ "CiphertextForRecipient": b64(&envelope(&recipient, key)), "KeyId": request["KeyId"] }))
                }
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
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
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
pub struct Host {
    pub store: Arc<Mutex<HashMap<String, Vec<StoredBlob>>>>,
    pub credentials: Result<AwsCredentials, String>,
}

impl Host {
    async fn serve(self, addr: LinkAddr) {
        let stream = conclave_proto::transport::connect(&addr).await.unwrap();
        let (mut r, mut w) = tokio::io::split(stream);
        w.write_all(&conclave_proto::link::encode_frame(&ToEnclave::Hello { v: PROTOCOL_VERSION })).await.unwrap();
        while let Ok(Ok(frame)) = conclave_proto::link::read_frame::<FromEnclave, _>(&mut r).await {
            let answer = match frame {
                FromEnclave::Load { call, slot, .. } => {
                    ToEnclave::Loaded { call, blob: self.store.lock().unwrap().get(&slot.path()).and_then(|v| v.last().cloned()) }
                }
                FromEnclave::Store { call, slot, blob, .. } => {
                    self.store.lock().unwrap().entry(slot.path()).or_default().push(blob);
                    ToEnclave::Stored { call, error: None }
                }
                FromEnclave::Credentials { call } => ToEnclave::Credentials { call, result: self.credentials.clone() },
                _ => return,
            };
            w.write_all(&conclave_proto::link::encode_frame(&answer)).await.unwrap();
        }
    }

    pub fn paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = self.store.lock().unwrap().iter().flat_map(|(p, v)| v.iter().map(move |b| format!("{p}@{}", b.version))).collect();
        paths.sort();
        paths
    }
}

pub struct Setup {
    pub dir: tempfile::TempDir,
    pub node: NodeId,
    pub nitro: NitroConfig,
    pub ca_file: PathBuf,
    pub kms: Arc<KmsStandIn>,
    pub starts: usize,
}

impl Setup {
    /// A node, a dev CA, and KMS whose key policy admits `pcr0` (None: this
    /// test binary's own measurement, i.e. the image's).
    pub fn new(pcr0: Option<Vec<u8>>) -> Setup {
        use sha2::Digest;
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::generate().unwrap();
        let ca_file = dir.path().join("dev-ca");
        std::fs::write(&ca_file, ca.to_file()).unwrap();
        let own = sha2::Sha384::digest(std::fs::read(std::env::current_exe().unwrap()).unwrap()).to_vec();
        let kms = Arc::new(KmsStandIn { root: ca.root().clone(), pcr0: pcr0.unwrap_or(own), keys: Mutex::default(), calls: Mutex::default() });
        let (proxy, kms_ca) = serve_kms(dir.path(), kms.clone());
        let nitro = NitroConfig {
            kms_key_id: format!("arn:aws:kms:{REGION}:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"),
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
    pub async fn start(&mut self, host: &Host) -> Result<Custody, CustodyError> {
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

    pub fn calls(&self) -> Vec<String> {
        self.kms.calls.lock().unwrap().clone()
    }
}

/// A host with credentials and an empty store.
pub fn host() -> Host {
    let credentials = AwsCredentials { access_key_id: "ASIAEXAMPLE".into(), secret_access_key: "secret".into(), session_token: Some("token".into()) };
    Host { store: Arc::default(), credentials: Ok(credentials) }
}
