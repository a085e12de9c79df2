//! What a nitro signer reads of KMS's answers: the JSON, and the CMS
//! envelope (BER) inside it.
#![no_main]
use conclave_enclave::kms::{cms, parse_answer, Operation};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = cms::parse(data) {
        assert_eq!(envelope.ciphertext.len() % 16, 0);
    }
    for operation in [Operation::GenerateDataKey, Operation::Decrypt] {
        let _ = parse_answer(operation, 200, data);
    }
});
