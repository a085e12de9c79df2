//! What hosts read from clients on the governance and approval subjects,
//! and what clients read back.
#![no_main]
use conclave_proto::approvals::{ApprovalReceipt, ApprovalSubmission};
use conclave_proto::govern::{AuditPage, GovernAnswer, GovernQuery};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(query) = GovernQuery::decode(data) {
        let again = serde_json::to_vec(&query).expect("queries serialise");
        assert_eq!(GovernQuery::decode(&again).ok(), Some(query), "an accepted query re-encodes to an accepted one");
    }
    if let Ok(submission) = ApprovalSubmission::decode(data) {
        let again = serde_json::to_vec(&submission).expect("submissions serialise");
        assert_eq!(ApprovalSubmission::decode(&again).ok(), Some(submission));
    }
    if let Ok(answer) = GovernAnswer::decode(data) {
        if let Ok(said) = answer.result {
            let _ = said.parse();
        }
    }
    let _ = AuditPage::decode(data);
    let _ = ApprovalReceipt::decode(data);
});
