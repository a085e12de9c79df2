//! Node-to-node envelopes as a host receives them from NATS.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(e) = conclave_proto::envelope::Envelope::decode(data) {
        let _ = e.header.aad();
    }
});
