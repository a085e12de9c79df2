//! Link frames as the enclave receives them from the host.
#![no_main]
use conclave_proto::link::{decode_frame, frame_len, ToEnclave};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if data.len() >= 4 {
        let _ = frame_len(data[..4].try_into().unwrap());
    }
    let _ = decode_frame::<ToEnclave>(data);
});
