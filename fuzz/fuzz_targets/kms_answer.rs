//! What a nitro signer reads of KMS's answers: the JSON, and the CMS
//! envelope (BER) inside it.
#![no_main]
use conclave_enclave::kms::{cms, parse_answer, Operation};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = cms::parse(data) {
        assert_eq!(envelope.ciphertext.len() % 16, 0);
    }
    for operation in [Operation::GenerateDataKey, Operation::Decrypt] {
        let _ = parse_answer(operation, "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", 200, data);
    }
});
