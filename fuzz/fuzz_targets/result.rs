//! Results as a client reads them from NATS, and the signers' statement
//! inside (also what a wallet record is).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(result) = conclave_proto::result::RequestResult::decode(data) {
        if let conclave_proto::result::Outcome::Ok { result } = result.outcome {
            let _ = result.parse();
        }
    }
    if let Ok(endorsed) = serde_json::from_slice::<conclave_proto::statement::Endorsed>(data) {
        let _ = endorsed.parse().map(|s| s.record().cloned());
        let _ = endorsed.unverified_record();
    }
});
