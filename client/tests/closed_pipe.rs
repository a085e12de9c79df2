//! `conclave ... | head`: a reader that closes the pipe early ends the CLI
//! quietly, never with a panic.

use std::process::{Command, Stdio};

#[test]
fn a_closed_stdout_ends_the_cli_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_conclave"))
        .args(["initiator", "new", "--out"])
        .arg(dir.path().join("initiator.key"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Closed before the CLI writes its line.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(dir.path().join("initiator.key").exists(), "the command did its work");
}
