//! A secured NATS for tests: a throwaway CA and server certificate for
//! 127.0.0.1, and an nkey user per node and for the client, with the
//! permissions of `deploy/nats/users.conf` (the production file itself).

use std::path::{Path, PathBuf};

/// Certificates and users of one secured test cluster.
pub struct NatsAccess {
    dir: PathBuf,
    nodes: usize,
}

impl NatsAccess {
    /// Makes a CA, a server certificate for 127.0.0.1 and `nodes` + 1 users
    /// (node-1..node-N, client) in `dir`.
    pub fn create(dir: &Path, nodes: usize) -> NatsAccess {
        crate::pki::TestCa::create(dir, "conclave test NATS CA");
        let access = NatsAccess { dir: dir.to_path_buf(), nodes };
        for user in access.users() {
            let pair = nkeys::KeyPair::new_user();
            std::fs::write(access.seed_file(&user), pair.seed().unwrap()).unwrap();
            std::fs::write(dir.join(format!("{user}.pub")), pair.public_key()).unwrap();
        }
        access
    }

    /// The access made by [`NatsAccess::create`] in `dir`.
    pub fn at(dir: &Path) -> NatsAccess {
        let nodes = std::fs::read_dir(dir).unwrap().filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            let name = name.to_string_lossy();
            name.starts_with("node-") && name.ends_with(".nk")
        });
        NatsAccess { dir: dir.to_path_buf(), nodes: nodes.count() }
    }

    fn users(&self) -> Vec<String> {
        (1..=self.nodes).map(|i| format!("node-{i}")).chain(["client".to_string()]).collect()
    }

    /// The CA that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The nkey seed of `user` (`node-<i>` or `client`).
    pub fn seed_file(&self, user: &str) -> PathBuf {
        self.dir.join(format!("{user}.nk"))
    }

    /// nats-server settings: TLS with the test certificate, and the
    /// production users file (copied beside the server's configuration).
    pub fn server_conf(&self, server_dir: &Path) -> String {
        std::fs::create_dir_all(server_dir).unwrap();
        std::fs::copy(crate::workspace().join("deploy/nats/users.conf"), server_dir.join("users.conf")).unwrap();
        format!(
            "tls {{ cert_file: \"{}\", key_file: \"{}\", timeout: 2 }}\ninclude users.conf\n",
            self.dir.join("server.pem").display(),
            self.dir.join("server.key").display()
        )
    }

    /// The environment naming each user's public key, as users.conf reads it.
    pub fn server_env(&self) -> Vec<(String, String)> {
        self.users()
            .into_iter()
            .map(|user| {
                let public = std::fs::read_to_string(self.dir.join(format!("{user}.pub"))).unwrap();
                (format!("CONCLAVE_{}_NKEY", user.to_uppercase().replace('-', "_")), public)
            })
            .collect()
    }

    /// A connection as `user`.
    pub async fn connect(&self, url: &str, user: &str) -> Result<async_nats::Client, async_nats::ConnectError> {
        conclave_proto::nats_access::connect_options(Some(&self.ca_file()), Some(&self.seed_file(user))).unwrap().connect(url).await
    }

    /// The settings `user` puts in its configuration file.
    pub fn config_lines(&self, user: &str) -> String {
        format!("nats_ca_file = \"{}\"\nnats_nkey_file = \"{}\"\n", self.ca_file().display(), self.seed_file(user).display())
    }
}
