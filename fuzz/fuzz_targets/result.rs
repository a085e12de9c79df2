//! Results as a client reads them from NATS.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = conclave_proto::result::RequestResult::decode(data);
});
