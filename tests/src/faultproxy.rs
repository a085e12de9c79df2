//! A TCP fault proxy on 127.0.0.1: what a node's network would do to it.
//! This kernel has no `tc netem`, so a node's host reaches NATS through one
//! of these, which the test can switch between passing traffic, delaying
//! it, and cutting it off (nothing moves either way; connections stay open,
//! as across a partition, and what was sent arrives only if the link heals).

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const PASS: u8 = 0;
const CUT: u8 = 1;

/// A running proxy; dropping it stops it.
pub struct FaultProxy {
    port: u16,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

struct State {
    mode: AtomicU8,
    delay_ms: AtomicU64,
    /// Tells stalled copies that the mode changed.
    changed: watch::Sender<()>,
}

impl FaultProxy {
    /// Listens on a free port and forwards every connection to `upstream`.
    pub async fn start(upstream: u16) -> FaultProxy {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let (changed, _) = watch::channel(());
        let state = Arc::new(State { mode: AtomicU8::new(PASS), delay_ms: AtomicU64::new(0), changed });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let state = shared.clone();
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::join!(copy(cr, sw, state.clone()), copy(sr, cw, state));
                });
            }
        });
        FaultProxy { port, state, task }
    }

    /// The URL a NATS client uses to go through the proxy.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Cuts the link: nothing moves either way until [`FaultProxy::heal`].
    pub fn cut(&self) {
        self.set(CUT);
    }

    /// Lets traffic through again (with the delay, if one is set).
    pub fn heal(&self) {
        self.set(PASS);
    }

    /// Holds every chunk of traffic this long before passing it on.
    pub fn delay(&self, delay: Duration) {
        self.state.delay_ms.store(delay.as_millis() as u64, Ordering::SeqCst);
    }

    fn set(&self, mode: u8) {
        self.state.mode.store(mode, Ordering::SeqCst);
        self.state.changed.send_replace(());
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn copy(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, state: Arc<State>) {
    let mut changed = state.changed.subscribe();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // While cut, read nothing: the sender's buffers fill and it stalls,
        // as behind a partition.
        while state.mode.load(Ordering::SeqCst) == CUT {
            if changed.changed().await.is_err() {
                return;
            }
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let delay = state.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        // Cut after reading: hold the chunk until the link heals.
        while state.mode.load(Ordering::SeqCst) == CUT {
            if changed.changed().await.is_err() {
                return;
            }
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
