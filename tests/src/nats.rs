//! A real nats-server with JetStream, on a free port of 127.0.0.1.

use crate::process::Proc;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A running nats-server.
pub struct NatsServer {
    proc: Proc,
    port: u16,
    dir: PathBuf,
}

impl NatsServer {
    /// Starts a server whose state lives in `dir`, and waits until it accepts
    /// clients.
    pub async fn start(dir: &Path) -> NatsServer {
        std::fs::create_dir_all(dir).expect("nats dir");
        let port = crate::free_port();
        let conf = dir.join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "listen: 127.0.0.1:{port}\nmax_payload: 8MB\njetstream {{ store_dir: \"{}\" }}\n",
                dir.join("data").display()
            ),
        )
        .expect("write nats.conf");
        let proc = Proc::spawn("nats-server", Path::new("nats-server"), &["-js", "-c", conf.to_str().unwrap()], &dir.join("nats.log"), &[]);
        let server = NatsServer { proc, port, dir: dir.to_path_buf() };
        let url = server.url();
        crate::eventually("nats-server to accept clients", Duration::from_secs(20), || {
            let url = url.clone();
            async move { async_nats::connect(url).await.ok() }
        })
        .await;
        server
    }

    /// Its client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
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
