//! An audit log export as a compliance team's checker reads it, and every
//! fault's message.
#![no_main]
use conclave_proto::audit::{check_export, check_log, AuditExport};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(export) = AuditExport::decode(data) {
        for log in &export.nodes {
            // Every signature "verifies", so the checker reads every entry.
            if let Err(fault) = check_log(&log.node, log, |_, _, _| true) {
                let _ = fault.to_string();
            }
            for entry in &log.entries {
                let _ = entry.parse();
            }
        }
        for result in check_export(&export, |_, _, _, _| true) {
            let _ = result.map_err(|fault| fault.to_string());
        }
    }
});
