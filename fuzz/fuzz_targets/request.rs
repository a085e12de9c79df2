//! Client requests as the host receives them from NATS.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok((_, body)) = conclave_proto::request::SignedRequest::decode(data) {
        let _ = body.validate();
    }
});
