//! `conclave attest verify` on the real Nitro documents: exit codes and the
//! JSON report a compliance team reads.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;

fn vector(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../attest/tests/vectors").join(name)
}

const PROD_PCR0: &str = "f4d48b81a460c9916d1e685119074bf24660afd3e34fae9fca0a0d28d9d5599936332687e6f66fc890ac8cf150142d8b";

/// Runs `conclave attest verify --json ARGS`; its exit code and report.
fn attest_verify(args: &[&str]) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_conclave")).args(["attest", "verify", "--json"]).args(args).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout:?} {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), report)
}

#[test]
fn production_document_at_its_timestamp_with_its_pcr0_is_valid() {
    let prod = vector("prod-2022-10-13.cose");
    let (code, r) = attest_verify(&["--doc", prod.to_str().unwrap(), "--at", "2022-10-13T09:00:00Z", "--pcr", &format!("0={PROD_PCR0}")]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["valid"], true);
    assert!(r.get("error").is_none());
    assert_eq!(r["module_id"], "i-020b6af9246d90e92-enc0183d09086c24190");
    assert_eq!(r["timestamp"], 1665651482136u64);
    assert_eq!(r["digest"], "SHA384");
    assert_eq!(r["pcrs"]["0"], PROD_PCR0);
    assert_eq!(r["pcrs"].as_object().unwrap().len(), 16);
    assert!(r["nonce"].as_str().unwrap().starts_with("cb3dc2eb76c0c134"));
    assert_eq!(r["user_data"], Value::Null);
    assert_eq!(r["public_key"], Value::Null);
    assert_eq!(r["root_fingerprint"], "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b");
}

#[test]
fn production_document_today_is_refused_as_expired() {
    let prod = vector("prod-2022-10-13.cose");
    let (code, r) = attest_verify(&["--doc", prod.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert_eq!(r["valid"], false);
    assert_eq!(r["error"]["check"], "expired", "{r}");
    assert!(r["error"]["reason"].as_str().unwrap().contains("is valid from 2022-10-"));
    // What the document states is still shown.
    assert_eq!(r["module_id"], "i-020b6af9246d90e92-enc0183d09086c24190");
}

#[test]
fn a_different_pcr_or_nonce_is_refused() {
    let prod = vector("prod-2022-10-13.cose");
    let other_pcr0 = format!("0={}", "00".repeat(48));
    let (code, r) = attest_verify(&["--doc", prod.to_str().unwrap(), "--at", "2022-10-13T09:00:00Z", "--pcr", &other_pcr0]);
    assert_eq!((code, &r["error"]["check"]), (1, &Value::from("pcr")));
    let (code, r) = attest_verify(&["--doc", prod.to_str().unwrap(), "--at", "2022-10-13T09:00:00Z", "--nonce", "00"]);
    assert_eq!((code, &r["error"]["check"]), (1, &Value::from("nonce")));
}

#[test]
fn debug_document_is_refused_unless_debug_mode_is_allowed() {
    let debug = vector("debug-2022-10-12.cose");
    let args = ["--doc", debug.to_str().unwrap(), "--at", "2022-10-12T14:00:00Z"];
    let (code, r) = attest_verify(&args);
    assert_eq!(code, 1);
    assert_eq!(r["error"]["check"], "debug", "{r}");

    let (code, r) = attest_verify(&[&args[..], &["--allow-debug"]].concat());
    assert_eq!(code, 0, "{r}");
    assert_eq!(r["valid"], true);
    assert_eq!(r["user_data"], hex::encode("hello, world!"));
    assert_eq!(r["public_key"], hex::encode("my super secret key"));
    assert_eq!(r["nonce"], Value::Null);
}

#[test]
fn a_malformed_document_reports_nothing_it_could_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.cose");
    std::fs::write(&garbage, b"not an attestation document").unwrap();
    let (code, r) = attest_verify(&["--doc", garbage.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(r["error"]["check"], "malformed");
    for field in ["module_id", "timestamp", "digest", "pcrs", "nonce", "user_data", "public_key"] {
        assert_eq!(r[field], Value::Null, "{field}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let prod = vector("prod-2022-10-13.cose");
    let run = |args: &[&str]| Command::new(env!("CARGO_BIN_EXE_conclave")).args(["attest", "verify"]).args(args).output().unwrap().status.code().unwrap();
    assert_eq!(run(&["--doc", "/nonexistent/doc.cose"]), 2);
    assert_eq!(run(&["--doc", prod.to_str().unwrap(), "--pcr", "0=zz"]), 2);
    assert_eq!(run(&["--doc", prod.to_str().unwrap(), "--pcr", "40=00"]), 2);
    assert_eq!(run(&["--doc", prod.to_str().unwrap(), "--at", "yesterday"]), 2);
    assert_eq!(run(&["--doc", prod.to_str().unwrap(), "--root", prod.to_str().unwrap()]), 2);
}
