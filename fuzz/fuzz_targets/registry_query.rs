//! A registry query as a host reads it, and an answer as a client reads it.
#![no_main]
use conclave_proto::registry::{Answer, Query};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(query) = Query::decode(data) {
        let again = serde_json::to_vec(&query).expect("queries serialise");
        assert_eq!(Query::decode(&again).ok(), Some(query), "an accepted query re-encodes to an accepted one");
    }
    let _ = Answer::decode(data);
});
