//! Unsigned EIP-1559 transactions as the signer and the client decode them.
//! The signer hashes the bytes it was given, so whatever decodes must
//! re-encode to exactly those bytes: a second encoding of the same
//! transaction would show the approver one thing and sign another.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = conclave_proto::eth::decode_unsigned(data) {
        assert_eq!(conclave_proto::eth::encode_unsigned(&tx), data);
    }
});
