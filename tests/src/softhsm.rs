//! SoftHSM2 tokens for test nodes: one token per node, in a private
//! `SOFTHSM2_CONF` directory under the node's own directory.
//!
//! Tokens are initialised with `softhsm2-util`, which takes the PINs as
//! arguments: acceptable for a throwaway token on a test machine, and the
//! reason production tokens are initialised with the HSM vendor's tools.
//! The signer itself only ever reads the user PIN from a file.

use rand_core::RngCore;
use std::path::{Path, PathBuf};

/// Debian's SoftHSM2 module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The environment variable that points SoftHSM2 at its configuration.
pub const CONF_ENV: &str = "SOFTHSM2_CONF";

/// The token directory of a node.
fn dir(node_dir: &Path) -> PathBuf {
    node_dir.join("softhsm")
}

/// The node's SoftHSM2 configuration file.
pub fn conf(node_dir: &Path) -> PathBuf {
    dir(node_dir).join("softhsm2.conf")
}

/// The file holding the user PIN of token `label`.
pub fn pin_file(node_dir: &Path, label: &str) -> PathBuf {
    dir(node_dir).join(format!("{label}.pin"))
}

/// The token label of node `id`.
pub fn token_label(id: &str) -> String {
    format!("conclave-{id}")
}

/// (Re)writes the node's configuration: the token directory is an absolute
/// path, so a copied node needs its own.
pub fn write_conf(node_dir: &Path) {
    let tokens = dir(node_dir).join("tokens");
    std::fs::create_dir_all(&tokens).expect("token directory");
    std::fs::write(
        conf(node_dir),
        format!("directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens.display()),
    )
    .expect("softhsm2.conf");
}

/// Creates and initialises a token labelled `label` in the node's token
/// directory with random PINs; returns the file holding the user PIN.
pub fn create_token(node_dir: &Path, label: &str) -> PathBuf {
    write_conf(node_dir);
    let random = || {
        let mut b = [0u8; 12];
        rand_core::OsRng.fill_bytes(&mut b);
        hex::encode(b)
    };
    let (user_pin, so_pin) = (random(), random());
    let out = std::process::Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", label, "--pin", &user_pin, "--so-pin", &so_pin])
        .env(CONF_ENV, conf(node_dir))
        .output()
        .expect("softhsm2-util (Debian package softhsm2; deploy/setup.sh installs it)");
    assert!(out.status.success(), "softhsm2-util --init-token: {}", String::from_utf8_lossy(&out.stderr));
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = pin_file(node_dir, label);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path).expect("pin file");
    f.write_all(user_pin.as_bytes()).expect("write pin");
    path
}
