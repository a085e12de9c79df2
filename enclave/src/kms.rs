//! Nitro mode's seal key: an AES-256 data key from AWS KMS, whose key
//! policy releases it only to an enclave showing the expected PCRs.
//!
//! The Recipient flow ("cryptographic attestation support in AWS KMS"):
//! for each call the enclave makes a fresh RSA key pair, asks its NSM for an
//! attestation document carrying the public key, and sends `GenerateDataKey`
//! (first start) or `Decrypt` (every later start, of the wrapped key the
//! host keeps) with `Recipient = {document, RSAES_OAEP_SHA_256}`. KMS checks
//! the document's PCRs against the key policy and answers with
//! `CiphertextForRecipient`, the data key in a CMS envelope for that RSA
//! key ([`cms`]); `Plaintext` stays empty.
//!
//! The TLS connection to KMS ends inside the enclave: the host only
//! forwards its bytes (AWS's vsock-proxy on the parent, `kms_proxy`). If the
//! host terminated TLS it could answer `GenerateDataKey` itself with a key
//! of its choosing, encrypted to the public key it sees in the document,
//! and then read every share sealed under it. Credentials come from the
//! host ([`Credentials`]); they let their holder ask KMS, which the host
//! can anyway, and KMS still releases keys only to an attested enclave.
//!
//! Each RSA key opens exactly one answer and is then dropped, so a host
//! feeding the enclave crafted ciphertexts learns nothing from how
//! decryption fails (no padding oracle outlives one call).

pub mod cms;
mod https;
pub mod sigv4;

use crate::attestation::{AttestationError, Nsm};
use base64::Engine;
use conclave_proto::link::LinkAddr;
use conclave_proto::NodeId;
pub use https::Endpoint;
pub use sigv4::Credentials;
use zeroize::Zeroizing;

/// Why KMS did not give the enclave its data key.
#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    /// KMS answered with an error (`AccessDeniedException` when the
    /// document's PCRs are not the key policy's, for example).
    #[error("KMS refused {operation}: HTTP {status} {kind}: {message}")]
    Refused {
        /// The operation.
        operation: &'static str,
        /// HTTP status.
        status: u16,
        /// KMS's `__type`.
        kind: String,
        /// KMS's message.
        message: String,
    },
    /// KMS answered for another key than the configured ARN (an alias
    /// resolved elsewhere, or a host's own key): its data key is not used.
    #[error("KMS answered {operation} with key {key_id:?}, not the configured key")]
    OtherKey {
        /// The operation.
        operation: &'static str,
        /// The key KMS named.
        key_id: String,
    },
    /// The answer is not what KMS sends.
    #[error("KMS answer to {operation} is malformed: {detail}")]
    Malformed {
        /// The operation.
        operation: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The answer carries the data key in the clear: the request reached
    /// KMS without its Recipient. The key is not used.
    #[error("KMS answered {operation} with the plaintext key: the request lost its Recipient on the way; refusing the key")]
    PlaintextExposed {
        /// The operation.
        operation: &'static str,
    },
    /// The envelope does not open with this call's RSA key.
    #[error(transparent)]
    Envelope(#[from] cms::CmsError),
    /// The envelope's key or content does not decrypt.
    #[error("CiphertextForRecipient does not decrypt with this call's key")]
    Decrypt,
    /// No attestation document for the request.
    #[error(transparent)]
    Attestation(#[from] AttestationError),
    /// The connection to KMS failed.
    #[error("KMS at {endpoint}: {detail}")]
    Transport {
        /// Host name and proxy.
        endpoint: String,
        /// What failed.
        detail: String,
    },
    /// The recipient key could not be made.
    #[error("RSA key generation: {0}")]
    KeyGeneration(String),
}

/// An AES-256 data key. Not printable; zeroized on drop.
pub struct DataKey(Zeroizing<[u8; 32]>);

impl DataKey {
    /// The key bytes.
    pub fn expose(&self) -> &[u8; 32] {
        &self.0
    }
}

/// The enclave's RSA key for one KMS answer.
pub struct RecipientKey(rsa::RsaPrivateKey);

/// KMS's smallest accepted recipient key is 2048 bits.
const RECIPIENT_BITS: usize = 2048;

impl RecipientKey {
    /// A fresh key.
    pub fn generate() -> Result<RecipientKey, KmsError> {
        rsa::RsaPrivateKey::new(&mut rand_core::OsRng, RECIPIENT_BITS).map(RecipientKey).map_err(|e| KmsError::KeyGeneration(e.to_string()))
    }

    /// The public key as DER `SubjectPublicKeyInfo`, for the document's
    /// `public_key`.
    pub fn public_key_der(&self) -> Vec<u8> {
        use rsa::pkcs8::EncodePublicKey;
        self.0.to_public_key().to_public_key_der().expect("an RSA public key encodes").into_vec()
    }

    /// Opens `CiphertextForRecipient`. Consumes the key: one answer each.
    pub fn open(self, ciphertext_for_recipient: &[u8]) -> Result<DataKey, KmsError> {
        use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, KeyIvInit};
        let envelope = cms::parse(ciphertext_for_recipient)?;
        let cek = Zeroizing::new(self.0.decrypt(rsa::Oaep::new::<sha2::Sha256>(), &envelope.encrypted_key).map_err(|_| KmsError::Decrypt)?);
        let cek: &[u8; 32] = cek.as_slice().try_into().map_err(|_| KmsError::Decrypt)?;
        let plaintext = Zeroizing::new(
            cbc::Decryptor::<aes::Aes256>::new(cek.into(), &envelope.iv.into())
                .decrypt_padded_vec_mut::<Pkcs7>(&envelope.ciphertext)
                .map_err(|_| KmsError::Decrypt)?,
        );
        let key: [u8; 32] = plaintext.as_slice().try_into().map_err(|_| KmsError::Decrypt)?;
        Ok(DataKey(Zeroizing::new(key)))
    }
}

/// The two KMS calls the enclave makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// A new data key (first start).
    GenerateDataKey,
    /// The data key again, from its wrapped form (every later start).
    Decrypt,
}

impl Operation {
    /// The API name (`X-Amz-Target: TrentService.<name>`).
    pub fn name(self) -> &'static str {
        match self {
            Operation::GenerateDataKey => "GenerateDataKey",
            Operation::Decrypt => "Decrypt",
        }
    }
}

/// The encryption context every data key is bound to: KMS refuses to
/// unwrap it under another, and the key policy can name it.
const CONTEXT_KEY: &str = "conclave:node";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The JSON body of a call. `wrapped` is the `CiphertextBlob` to decrypt
/// (for [`Operation::Decrypt`]).
pub fn request_body(operation: Operation, key_id: &str, node: &NodeId, document: &[u8], wrapped: Option<&[u8]>) -> Vec<u8> {
    let mut body = serde_json::json!({
        "KeyId": key_id,
        "EncryptionContext": { CONTEXT_KEY: node.as_str() },
        "Recipient": { "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": b64(document) },
    });
    match operation {
        Operation::GenerateDataKey => body["KeySpec"] = "AES_256".into(),
        Operation::Decrypt => body["CiphertextBlob"] = b64(wrapped.unwrap_or_default()).into(),
    }
    serde_json::to_vec(&body).expect("JSON serialises")
}

/// What the enclave takes from an answer.
pub struct Answer {
    /// `CiphertextBlob` (GenerateDataKey): the data key under the KMS key,
    /// for the host to keep.
    pub wrapped: Option<Vec<u8>>,
    /// `CiphertextForRecipient`.
    pub for_recipient: Vec<u8>,
}

/// The most of an answer that is read (an answer is a few KiB).
pub const MAX_ANSWER: usize = 64 * 1024;

/// Reads KMS's answer (`status` and JSON body) to `operation` on the key
/// `key_arn`, which the answer must name.
pub fn parse_answer(operation: Operation, key_arn: &str, status: u16, body: &[u8]) -> Result<Answer, KmsError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Success {
        key_id: Option<String>,
        ciphertext_blob: Option<String>,
        ciphertext_for_recipient: Option<String>,
        plaintext: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Failure {
        #[serde(rename = "__type", default)]
        kind: String,
        #[serde(alias = "Message", default)]
        message: String,
    }
    let op = operation.name();
    let malformed = |detail: String| KmsError::Malformed { operation: op, detail };
    if body.len() > MAX_ANSWER {
        return Err(malformed(format!("{} bytes", body.len())));
    }
    if status != 200 {
        let failure: Failure = serde_json::from_slice(body)
            .unwrap_or(Failure { kind: String::new(), message: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned() });
        // KMS may prefix the type with its namespace ("...#AccessDeniedException").
        let kind = failure.kind.rsplit('#').next().unwrap_or_default().to_string();
        return Err(KmsError::Refused { operation: op, status, kind, message: failure.message });
    }
    let answer: Success = serde_json::from_slice(body).map_err(|e| malformed(e.to_string()))?;
    if answer.plaintext.is_some_and(|p| !p.is_empty()) {
        return Err(KmsError::PlaintextExposed { operation: op });
    }
    if answer.key_id.as_deref() != Some(key_arn) {
        return Err(KmsError::OtherKey { operation: op, key_id: answer.key_id.unwrap_or_default() });
    }
    let decode = |field: &str, text: String| base64::engine::general_purpose::STANDARD.decode(text).map_err(|_| malformed(format!("{field} is not base64")));
    let for_recipient = decode("CiphertextForRecipient", answer.ciphertext_for_recipient.ok_or_else(|| malformed("no CiphertextForRecipient".into()))?)?;
    let wrapped = match (operation, answer.ciphertext_blob) {
        (Operation::GenerateDataKey, Some(blob)) => Some(decode("CiphertextBlob", blob)?),
        (Operation::GenerateDataKey, None) => return Err(malformed("no CiphertextBlob".into())),
        (Operation::Decrypt, _) => None,
    };
    Ok(Answer { wrapped, for_recipient })
}

/// One KMS call with a fresh recipient key: the data key, and for
/// [`Operation::GenerateDataKey`] its wrapped form.
pub async fn call(
    endpoint: &Endpoint,
    credentials: &Credentials,
    nsm: &Nsm,
    operation: Operation,
    key_id: &str,
    node: &NodeId,
    wrapped: Option<&[u8]>,
) -> Result<(DataKey, Option<Vec<u8>>), KmsError> {
    // RSA key generation takes a while; keep it off the async workers.
    let recipient = tokio::task::spawn_blocking(RecipientKey::generate).await.map_err(|e| KmsError::KeyGeneration(e.to_string()))??;
    let document = nsm.attest_for_kms(&recipient.public_key_der())?;
    let body = request_body(operation, key_id, node, &document, wrapped);
    let (status, answer) = endpoint.post(credentials, operation.name(), body).await?;
    let answer = parse_answer(operation, key_id, status, &answer)?;
    let key = recipient.open(&answer.for_recipient)?;
    Ok((key, answer.wrapped))
}

/// The default forwarder to KMS: AWS's vsock-proxy on the parent (CID 3).
pub fn default_proxy() -> LinkAddr {
    LinkAddr::Vsock { cid: 3, port: 8000 }
}

#[cfg(test)]
mod tests;
