//! KMS answers in the shapes KMS sends them. The envelopes in `testdata/`
//! were made by OpenSSL (`testdata/make.sh`) for a throwaway RSA key.

use super::*;

const BER: &[u8] = include_bytes!("testdata/ber.cms");
const DER: &[u8] = include_bytes!("testdata/der.cms");
const AES128: &[u8] = include_bytes!("testdata/aes128.cms");
const PKCS1: &[u8] = include_bytes!("testdata/pkcs1.cms");
const RECIPIENT: &[u8] = include_bytes!("testdata/recipient.pk8.der");
const DATA_KEY_HEX: &str = include_str!("testdata/datakey.hex");

fn recipient() -> RecipientKey {
    use rsa::pkcs8::DecodePrivateKey;
    RecipientKey(rsa::RsaPrivateKey::from_pkcs8_der(RECIPIENT).unwrap())
}

fn data_key() -> Vec<u8> {
    hex::decode(DATA_KEY_HEX.trim()).unwrap()
}

#[test]
fn envelopes_in_ber_with_chunked_content_and_in_der_both_open() {
    for envelope in [BER, DER] {
        assert_eq!(recipient().open(envelope).unwrap().expose().as_slice(), data_key().as_slice());
    }
    // BER as KMS writes it: indefinite lengths, content in two chunks.
    assert_eq!(&BER[..2], &[0x30, 0x80]);
}

#[test]
fn other_algorithms_are_refused() {
    assert!(matches!(recipient().open(AES128), Err(KmsError::Envelope(cms::CmsError("content is not encrypted with AES-256-CBC")))));
    assert!(matches!(recipient().open(PKCS1), Err(KmsError::Envelope(cms::CmsError("key is not encrypted with RSAES-OAEP")))));
}

#[test]
fn an_envelope_for_another_key_does_not_open() {
    let other = RecipientKey::generate().unwrap();
    assert!(matches!(other.open(BER), Err(KmsError::Decrypt)));
}

#[test]
fn hostile_envelopes_are_refused_without_panicking() {
    // Every truncation is refused.
    for len in 0..BER.len() {
        assert!(cms::parse(&BER[..len]).is_err(), "truncated to {len}");
    }
    // Flipped bytes never panic. Fields the recipient does not use (the
    // recipient's name, versions, OAEP parameters, which decryption checks)
    // may change freely; a flip in what it uses (the encrypted key, the IV,
    // the content) never still yields the data key.
    let envelope = cms::parse(BER).unwrap();
    let offset = |part: &[u8]| BER.windows(part.len()).position(|w| w == part).unwrap();
    let used = [
        offset(&envelope.encrypted_key)..offset(&envelope.encrypted_key) + envelope.encrypted_key.len(),
        offset(&envelope.iv)..offset(&envelope.iv) + 16,
        offset(&envelope.ciphertext[..32])..offset(&envelope.ciphertext[..32]) + 32,
        offset(&envelope.ciphertext[32..])..offset(&envelope.ciphertext[32..]) + 16,
    ];
    for i in 0..BER.len() {
        let mut bad = BER.to_vec();
        bad[i] ^= 0x01;
        let opened = recipient().open(&bad);
        if used.iter().any(|r| r.contains(&i)) {
            assert!(opened.map_or(true, |key| key.expose().as_slice() != data_key().as_slice()), "flip at {i} still yields the key");
        }
    }
    // Deep nesting, lengths past the end, trailing bytes, oversize.
    let deep: Vec<u8> = std::iter::repeat_n([0x30u8, 0x80], 64).flatten().collect();
    assert_eq!(cms::parse(&deep).err(), Some(cms::CmsError("nested too deeply")));
    assert_eq!(cms::parse(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).err(), Some(cms::CmsError("truncated")));
    assert_eq!(cms::parse(&[0x30, 0x85, 1, 0, 0, 0, 0]).err(), Some(cms::CmsError("bad length")));
    assert_eq!(cms::parse(&[DER, &[0]].concat()).err(), Some(cms::CmsError("trailing bytes")));
    assert_eq!(cms::parse(&vec![0u8; cms::MAX_ENVELOPE + 1]).err(), Some(cms::CmsError("too large")));
}

fn node() -> NodeId {
    NodeId::new("node-1").unwrap()
}

const KEY_ARN: &str = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

#[test]
fn requests_carry_the_recipient_and_the_node_context() {
    let generate: serde_json::Value = serde_json::from_slice(&request_body(Operation::GenerateDataKey, KEY_ARN, &node(), b"doc", None)).unwrap();
    assert_eq!(generate["KeyId"], KEY_ARN);
    assert_eq!(generate["KeySpec"], "AES_256");
    assert_eq!(generate["EncryptionContext"]["conclave:node"], "node-1");
    assert_eq!(generate["Recipient"]["KeyEncryptionAlgorithm"], "RSAES_OAEP_SHA_256");
    assert_eq!(generate["Recipient"]["AttestationDocument"], "ZG9j");
    assert!(generate.get("CiphertextBlob").is_none());
    let decrypt: serde_json::Value = serde_json::from_slice(&request_body(Operation::Decrypt, KEY_ARN, &node(), b"doc", Some(b"wrapped"))).unwrap();
    assert_eq!(decrypt["CiphertextBlob"], "d3JhcHBlZA==");
    assert_eq!(decrypt["EncryptionContext"]["conclave:node"], "node-1");
    assert!(decrypt.get("KeySpec").is_none());
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn answers_in_kms_format_give_the_envelope_and_the_wrapped_key() {
    // GenerateDataKey with a Recipient: no Plaintext field.
    let generate =
        serde_json::json!({ "CiphertextBlob": b64(b"wrapped-by-kms"), "CiphertextForRecipient": b64(BER), "KeyId": KEY_ARN, "KeyMaterialId": "abc" });
    let answer = parse_answer(Operation::GenerateDataKey, KEY_ARN, 200, generate.to_string().as_bytes()).unwrap();
    assert_eq!(answer.wrapped.as_deref(), Some(&b"wrapped-by-kms"[..]));
    assert_eq!(recipient().open(&answer.for_recipient).unwrap().expose().as_slice(), data_key().as_slice());
    let decrypt = serde_json::json!({ "CiphertextForRecipient": b64(DER), "EncryptionAlgorithm": "SYMMETRIC_DEFAULT", "KeyId": KEY_ARN });
    let answer = parse_answer(Operation::Decrypt, KEY_ARN, 200, decrypt.to_string().as_bytes()).unwrap();
    assert!(answer.wrapped.is_none());
    assert_eq!(answer.for_recipient, DER);
}

#[test]
fn refusals_and_odd_answers_are_typed_errors() {
    let denied = br#"{"__type":"AccessDeniedException","message":"User: arn:aws:sts::111122223333:assumed-role/conclave-node-1/i-0abc is not authorized to perform: kms:Decrypt"}"#;
    match parse_answer(Operation::Decrypt, KEY_ARN, 400, denied) {
        Err(KmsError::Refused { operation: "Decrypt", status: 400, kind, message }) => {
            assert_eq!(kind, "AccessDeniedException");
            assert!(message.contains("not authorized"), "{message}");
        }
        other => panic!("{:?}", other.err()),
    }
    let namespaced = br#"{"__type":"com.amazonaws.kms#InvalidCiphertextException","Message":"bad"}"#;
    assert!(matches!(parse_answer(Operation::Decrypt, KEY_ARN, 400, namespaced), Err(KmsError::Refused { kind, .. }) if kind == "InvalidCiphertextException"));
    assert!(matches!(parse_answer(Operation::Decrypt, KEY_ARN, 502, b"<html>bad gateway</html>"), Err(KmsError::Refused { status: 502, .. })));
    // A request that lost its Recipient on the way: the key was exposed.
    let exposed = serde_json::json!({ "CiphertextBlob": b64(b"w"), "Plaintext": b64(&data_key()), "KeyId": KEY_ARN });
    assert!(matches!(parse_answer(Operation::GenerateDataKey, KEY_ARN, 200, exposed.to_string().as_bytes()), Err(KmsError::PlaintextExposed { .. })));
    let no_envelope = serde_json::json!({ "CiphertextBlob": b64(b"w"), "KeyId": KEY_ARN });
    assert!(matches!(parse_answer(Operation::GenerateDataKey, KEY_ARN, 200, no_envelope.to_string().as_bytes()), Err(KmsError::Malformed { .. })));
    let no_wrapped = serde_json::json!({ "CiphertextForRecipient": b64(BER), "KeyId": KEY_ARN });
    assert!(matches!(parse_answer(Operation::GenerateDataKey, KEY_ARN, 200, no_wrapped.to_string().as_bytes()), Err(KmsError::Malformed { .. })));
    let not_b64 = serde_json::json!({ "CiphertextForRecipient": "!!", "KeyId": KEY_ARN });
    assert!(matches!(parse_answer(Operation::Decrypt, KEY_ARN, 200, not_b64.to_string().as_bytes()), Err(KmsError::Malformed { .. })));
    assert!(matches!(parse_answer(Operation::Decrypt, KEY_ARN, 200, &vec![b' '; MAX_ANSWER + 1]), Err(KmsError::Malformed { .. })));
    // An answer for another key (an alias resolved in the host's account,
    // or none named) never gives the seal key.
    let other_key =
        serde_json::json!({ "CiphertextForRecipient": b64(DER), "KeyId": "arn:aws:kms:eu-west-1:444455556666:key/1234abcd-12ab-34cd-56ef-1234567890ab" });
    assert!(matches!(parse_answer(Operation::Decrypt, KEY_ARN, 200, other_key.to_string().as_bytes()), Err(KmsError::OtherKey { .. })));
    let unnamed = serde_json::json!({ "CiphertextForRecipient": b64(DER) });
    assert!(matches!(parse_answer(Operation::Decrypt, KEY_ARN, 200, unnamed.to_string().as_bytes()), Err(KmsError::OtherKey { .. })));
}
