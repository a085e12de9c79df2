//! The Consul agent a test uses: the in-repo stand-in
//! ([`crate::consul_standin`]), or a real agent when `CONSUL_HTTP_ADDR` is
//! set (then `CONSUL_HTTP_TOKEN_FILE` or `CONSUL_HTTP_TOKEN` gives its ACL
//! token, as for the `consul` CLI). Each use gets its own key prefix, so
//! tests never see each other's keys, on a shared real agent too.

use crate::consul_standin::ConsulStandIn;
use std::path::{Path, PathBuf};

/// An agent and this test's corner of it.
pub struct ConsulAgent {
    address: String,
    token_file: Option<PathBuf>,
    prefix: String,
    _standin: Option<ConsulStandIn>,
}

impl ConsulAgent {
    /// The agent for one test; `dir` holds the token file it writes.
    pub async fn start(dir: &Path) -> ConsulAgent {
        let mut tag = [0u8; 6];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut tag);
        let prefix = format!("conclave-test/{}", hex::encode(tag));
        let token_path = dir.join("consul.token");
        if let Ok(address) = std::env::var("CONSUL_HTTP_ADDR") {
            let address = if address.contains("://") { address } else { format!("http://{address}") };
            let token_file = match (std::env::var_os("CONSUL_HTTP_TOKEN_FILE"), std::env::var("CONSUL_HTTP_TOKEN")) {
                (Some(file), _) => Some(PathBuf::from(file)),
                (None, Ok(token)) => {
                    std::fs::write(&token_path, token).expect("write token file");
                    Some(token_path)
                }
                (None, Err(_)) => None,
            };
            return ConsulAgent { address, token_file, prefix, _standin: None };
        }
        let mut token = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut token);
        let token = hex::encode(token);
        std::fs::write(&token_path, &token).expect("write token file");
        let standin = ConsulStandIn::start(Some(token)).await;
        ConsulAgent { address: standin.address(), token_file: Some(token_path), prefix, _standin: Some(standin) }
    }

    /// The host configuration's registry settings for this agent.
    pub fn host_toml(&self) -> String {
        let token = match &self.token_file {
            Some(file) => format!("token_file = \"{}\"\n", file.display()),
            None => String::new(),
        };
        format!("registry = \"consul\"\n\n[consul]\naddress = \"{}\"\n{token}prefix = \"{}\"\nwait_s = 5\n", self.address, self.prefix)
    }

    /// The same settings as the host reads them.
    pub fn config(&self) -> conclave_host::registry::ConsulConfig {
        let text = self.host_toml();
        let section = text.split_once("[consul]").expect("consul section").1;
        toml::from_str(section).expect("consul settings parse")
    }
}
