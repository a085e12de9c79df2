//! `conclave-chaos`: what node failures cost, measured on a local 2-of-3
//! hsm cluster (real processes, SIGKILL), printed, never asserted.
//!
//! 1. Death to answer: ECDSA requests signed one after another by the
//!    default quorum (node-1, node-2); node-2 is killed mid-request. Time
//!    from the kill to that request's answer, and the latency it added.
//! 2. Rejoin: node-2 restarts; time until the cluster sees it ready.
//! 3. Churn: N EdDSA requests, 4 at a time, while a random node is killed
//!    and restarted every K requests; then the sessions and requests each
//!    host still holds (target: none).
//!
//! Usage: `cargo run -p conclave-tests --bin conclave-chaos -- [--requests N]`

use conclave_client::{Client, ClientError};
use conclave_proto::request::SignPayload;
use conclave_proto::{Scheme, WalletId};
use conclave_tests::{eventually, Cluster};
use futures::StreamExt;
use rand_core::RngCore;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let requests = match args.as_slice() {
        [] => 1000,
        [flag, n] if flag == "--requests" => n.parse().unwrap_or_else(|_| usage()),
        _ => usage(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime");
    runtime.block_on(chaos(requests));
}

fn usage() -> ! {
    eprintln!("usage: conclave-chaos [--requests N]");
    std::process::exit(2)
}

async fn chaos(requests: usize) {
    let mut cluster = Cluster::start(3).await;
    let client = Arc::new(cluster.client().await);
    let ecdsa = WalletId::new("chaos-ecdsa").unwrap();
    let eddsa = WalletId::new("chaos-eddsa").unwrap();
    client.keygen(&ecdsa, Scheme::Ecdsa, 2, None).await.expect("keygen");
    client.keygen(&eddsa, Scheme::Eddsa, 2, None).await.expect("keygen");

    // 1. Death to answer.
    let sign = |client: Arc<Client>, w: WalletId, scheme: Scheme| async move {
        let started = Instant::now();
        let result = client.sign(&w, scheme, SignPayload::Message(b"chaos".to_vec()), vec![], None).await;
        (result, started.elapsed())
    };
    let mut normal = Vec::new();
    for _ in 0..5 {
        let (result, took) = sign(client.clone(), ecdsa.clone(), Scheme::Ecdsa).await;
        result.expect("ECDSA signature");
        normal.push(took);
    }
    normal.sort();
    let typical = normal[normal.len() / 2];
    let in_flight = tokio::spawn(sign(client.clone(), ecdsa.clone(), Scheme::Ecdsa));
    eventually("node-2 to be signing", Duration::from_secs(30), || {
        let cluster = &cluster;
        async move { (cluster.metric(2, "conclave_sessions_active").await >= 1.0).then_some(()) }
    })
    .await;
    let killed = Instant::now();
    cluster.kill_node(2);
    let (result, took) = in_flight.await.expect("request task");
    let answered = killed.elapsed();
    println!("ECDSA 2-of-3, default quorum node-1 + node-2, node-2 killed mid-request");
    println!("  typical signature (p50 of 5):         {:>7.0} ms", ms(typical));
    println!(
        "  kill -> answer of the request:        {:>7.0} ms ({})",
        ms(answered),
        match &result {
            Ok(sig) => format!("signed by {:?}", sig.signers),
            Err(e) => format!("failed: {e}"),
        }
    );
    println!("  latency the failover added:           {:>7.0} ms", ms(took.saturating_sub(typical)));

    // 2. Rejoin.
    let restarted = Instant::now();
    cluster.start_node(2);
    let client_ref = client.clone();
    eventually("node-2 ready again", Duration::from_secs(60), || {
        let client = client_ref.clone();
        async move { client.status().await.ok().filter(|s| s.ready == 3).map(|_| ()) }
    })
    .await;
    println!("  restart -> seen ready by the cluster: {:>7.0} ms", ms(restarted.elapsed()));

    // 3. Churn.
    let kill_every = (requests / 10).max(10);
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut down: Option<usize> = None;
    let started = Instant::now();
    let mut done = 0;
    let mut batch = futures::stream::iter((0..requests).map(|_| sign(client.clone(), eddsa.clone(), Scheme::Eddsa))).buffer_unordered(4);
    let mut kills = 0;
    while let Some((result, _)) = batch.next().await {
        let key = match result {
            Ok(_) => "ok".to_string(),
            Err(ClientError::Request(e)) => e.code.as_str().to_string(),
            Err(ClientError::Timeout { .. }) => "client_timeout".to_string(),
            Err(e) => format!("client: {e}"),
        };
        *outcomes.entry(key).or_default() += 1;
        done += 1;
        if done % kill_every == 0 {
            if let Some(i) = down.take() {
                cluster.start_node(i);
            } else {
                let i = 1 + (rand_core::OsRng.next_u32() % 3) as usize;
                cluster.kill_node(i);
                kills += 1;
                down = Some(i);
            }
        }
    }
    if let Some(i) = down.take() {
        cluster.start_node(i);
    }
    let churn = started.elapsed();
    cluster.wait_ready(3).await;
    // Requests end by their deadline; whatever a host still holds after
    // that is left behind.
    let mut left = 0.0;
    for i in 1..=3 {
        let mut held = 0.0;
        for _ in 0..20 {
            held = cluster.metric(i, "conclave_sessions_active").await + cluster.metric(i, "conclave_requests_following").await;
            if held == 0.0 {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        left += held;
    }
    println!();
    println!("EdDSA churn: {requests} requests, 4 at a time, {kills} kills (kill -9 of a random node every {kill_every} answers, restart after the next {kill_every})");
    println!("  took {:.1} s; outcomes: {outcomes:?}", churn.as_secs_f64());
    println!("  sessions and requests still held by the hosts afterwards: {left}");
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
