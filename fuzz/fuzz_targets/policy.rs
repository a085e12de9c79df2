//! A signed policy as a signer reads it (and its document as the client
//! checks it before signing).
#![no_main]
use conclave_proto::policy::{Policy, SignedPolicy};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok((signed, policy)) = SignedPolicy::decode(data) {
        assert_eq!(signed.parse().ok(), Some(policy), "a decoded policy parses again the same");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(policy) = Policy::parse(text) {
            let again = serde_json::to_string(&policy).expect("policies serialise");
            assert_eq!(Policy::parse(&again).ok(), Some(policy), "an accepted policy re-encodes to an accepted one");
        }
    }
});
