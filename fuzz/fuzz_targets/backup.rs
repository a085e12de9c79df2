//! A backup file as `conclave-host restore` reads it.
#![no_main]
use conclave_proto::backup::Backup;
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(backup) = Backup::decode(data) {
        assert_eq!(Backup::decode(&backup.encode()).ok(), Some(backup), "an accepted backup re-encodes to an accepted one");
    }
});
