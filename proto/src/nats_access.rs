//! How a node or a client reaches NATS: the server CA for `tls://` URLs and
//! the user's nkey seed, as named in both configuration files. The server
//! knows only each user's public nkey and what it may publish and
//! subscribe to (`deploy/nats/users.conf`).

use std::path::{Path, PathBuf};

/// Why the NATS access settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum NatsAccessError {
    /// The nkey seed file cannot be read.
    #[error("nats_nkey_file {path}: {source}")]
    Nkey {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold a user seed.
    #[error("nats_nkey_file {0}: not an nkey user seed (one line starting with SU)")]
    NotASeed(PathBuf),
    /// The CA file is missing.
    #[error("nats_ca_file {0}: not found")]
    Ca(PathBuf),
}

/// Connection options with TLS to servers signed by `ca_file` (required
/// when given) and the nkey user whose seed is in `nkey_file`.
pub fn connect_options(ca_file: Option<&Path>, nkey_file: Option<&Path>) -> Result<async_nats::ConnectOptions, NatsAccessError> {
    let mut options = async_nats::ConnectOptions::new();
    if let Some(ca) = ca_file {
        if !ca.is_file() {
            return Err(NatsAccessError::Ca(ca.into()));
        }
        options = options.add_root_certificates(ca.into()).require_tls(true);
    }
    if let Some(path) = nkey_file {
        let text = std::fs::read_to_string(path).map_err(|source| NatsAccessError::Nkey { path: path.into(), source })?;
        let seed = text.trim();
        if !seed.starts_with("SU") || seed.contains(char::is_whitespace) {
            return Err(NatsAccessError::NotASeed(path.into()));
        }
        options = options.nkey(seed.to_owned());
    }
    Ok(options)
}
