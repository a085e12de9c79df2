//! A throwaway certificate authority for tests: a CA, a server certificate
//! for 127.0.0.1, and client certificates, as PEM files in a directory.

use std::path::{Path, PathBuf};

/// A CA whose files live in `dir`.
pub struct TestCa {
    dir: PathBuf,
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl TestCa {
    /// Makes a CA (`ca.pem`) and a server certificate for 127.0.0.1 and
    /// localhost (`server.pem`, `server.key`) in `dir`.
    pub fn create(dir: &Path, name: &str) -> TestCa {
        std::fs::create_dir_all(dir).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.pem"), cert.pem()).unwrap();
        let ca = TestCa { dir: dir.to_path_buf(), cert, key };
        ca.issue("server", true);
        ca
    }

    /// Issues `<name>.pem` / `<name>.key`: a server certificate for
    /// 127.0.0.1 and localhost, or a client certificate.
    pub fn issue(&self, name: &str, server: bool) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(if server { vec!["localhost".to_string()] } else { Vec::new() }).unwrap();
        if server {
            params.subject_alt_names.push(rcgen::SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
        }
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        std::fs::write(self.dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(self.dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }

    /// A file of this CA's directory (`ca.pem`, `server.pem`, ...).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}
