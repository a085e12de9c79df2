//! Real nats-servers with JetStream on free ports of 127.0.0.1: one alone,
//! or three routed into a JetStream cluster.

use crate::process::Proc;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A running nats-server.
pub struct NatsServer {
    proc: Proc,
    port: u16,
    dir: PathBuf,
    /// TLS and users, for a secured server: (CA, a user's seed) to probe it.
    secured: Option<(PathBuf, PathBuf)>,
}

impl NatsServer {
    /// Starts a server whose state lives in `dir`, and waits until it accepts
    /// clients.
    pub async fn start(dir: &Path) -> NatsServer {
        Self::start_own(dir, "", &[], None).await
    }

    /// Starts a server that requires TLS and the users of `access`.
    pub async fn start_secured(dir: &Path, access: &crate::natsaccess::NatsAccess) -> NatsServer {
        let env = access.server_env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Self::start_own(dir, &access.server_conf(dir), &env, Some((access.ca_file(), access.seed_file("client")))).await
    }

    /// Starts a server on a free port and makes sure the server that
    /// answers there is this one (by its unique name): a port found free can
    /// be taken by another test's server before this one binds it, and then
    /// this cluster would talk to that test's nodes. Tried on another port.
    async fn start_own(dir: &Path, extra: &str, env: &[(&str, &str)], secured: Option<(PathBuf, PathBuf)>) -> NatsServer {
        for _ in 0..5 {
            let name = format!("conclave-test-{}", hex::encode(rand_core::RngCore::next_u64(&mut rand_core::OsRng).to_be_bytes()));
            let mut server = Self::spawn_with(dir, crate::free_port(), &format!("server_name: {name}\n{extra}"), env);
            server.secured = secured.clone();
            if server.answers_as(&name).await {
                return server;
            }
            server.kill();
        }
        panic!("no nats-server of this test came up on a free port in 5 tries; see {}", dir.join("nats.log").display());
    }

    /// Whether the server on this port is the one named `name` (until this
    /// one's process exits or 20 s pass).
    async fn answers_as(&mut self, name: &str) -> bool {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < deadline && self.proc.is_running() {
            let options = match &self.secured {
                Some((ca, seed)) => conclave_proto::nats_access::connect_options(Some(ca), Some(seed)).expect("client options"),
                None => async_nats::ConnectOptions::new(),
            };
            if let Ok(client) = options.connect(self.url()).await {
                return client.server_info().server_name == name;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// Starts `size` servers routed into one JetStream cluster (each in
    /// `dir/n<i>`), and waits until JetStream answers through each.
    pub async fn start_cluster(dir: &Path, size: usize) -> Vec<NatsServer> {
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (crate::free_port(), crate::free_port())).collect();
        let routes: Vec<String> = ports.iter().map(|(_, route)| format!("\"nats-route://127.0.0.1:{route}\"")).collect();
        let servers: Vec<NatsServer> = ports
            .iter()
            .enumerate()
            .map(|(i, (client, route))| {
                let cluster =
                    format!("server_name: n{}\ncluster {{ name: conclave, listen: \"127.0.0.1:{route}\", routes: [{}] }}\n", i + 1, routes.join(", "));
                Self::spawn(&dir.join(format!("n{}", i + 1)), *client, &cluster)
            })
            .collect();
        for server in &servers {
            server.wait_for_clients().await;
            let url = server.url();
            crate::eventually("the JetStream cluster to elect a leader", Duration::from_secs(60), || {
                let url = url.clone();
                async move {
                    let client = async_nats::connect(url).await.ok()?;
                    async_nats::jetstream::new(client).query_account().await.ok()
                }
            })
            .await;
        }
        servers
    }

    fn spawn(dir: &Path, port: u16, extra: &str) -> NatsServer {
        Self::spawn_with(dir, port, extra, &[])
    }

    fn spawn_with(dir: &Path, port: u16, extra: &str, env: &[(&str, &str)]) -> NatsServer {
        std::fs::create_dir_all(dir).expect("nats dir");
        let conf = dir.join("nats.conf");
        std::fs::write(&conf, format!("listen: 127.0.0.1:{port}\nmax_payload: 8MB\njetstream {{ store_dir: \"{}\" }}\n{extra}", dir.join("data").display()))
            .expect("write nats.conf");
        let proc = Proc::spawn("nats-server", &nats_server_bin(), &["-js", "-c", conf.to_str().unwrap()], &dir.join("nats.log"), env);
        NatsServer { proc, port, dir: dir.to_path_buf(), secured: None }
    }

    async fn wait_for_clients(&self) {
        let url = self.url();
        let secured = self.secured.clone();
        crate::eventually("nats-server to accept clients", Duration::from_secs(20), || {
            let (url, secured) = (url.clone(), secured.clone());
            async move {
                let options = match &secured {
                    Some((ca, seed)) => conclave_proto::nats_access::connect_options(Some(ca), Some(seed)).ok()?,
                    None => async_nats::ConnectOptions::new(),
                };
                options.connect(url).await.ok()
            }
        })
        .await;
    }

    /// Its client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its client URL.
    pub fn url(&self) -> String {
        let scheme = if self.secured.is_some() { "tls" } else { "nats" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Kills it.
    pub fn kill(&mut self) {
        self.proc.kill();
    }

    /// Its state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// The nats-server that `deploy/setup.sh` installed under `.tools/`, or the
/// one on `PATH`.
pub fn nats_server_bin() -> std::path::PathBuf {
    let ours = crate::workspace().join(".tools/bin/nats-server");
    if ours.exists() {
        ours
    } else {
        "nats-server".into()
    }
}
