//! `/healthz`, `/readyz` and `/metrics` over HTTP/1 (hyper).

use crate::coordinator::Host;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Serves until the process ends.
pub async fn serve(host: Arc<Host>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(host.config.http_addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let host = host.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| respond(host.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
        });
    }
}

async fn respond(host: Arc<Host>, req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (status, body) = match req.uri().path() {
        "/healthz" => (StatusCode::OK, "ok\n".to_string()),
        "/readyz" => {
            let link = host.link.is_up();
            let nats = host.metrics.nats_connected.load(Ordering::Relaxed);
            // This host's view (in memory): a health check must not wait on
            // the registry.
            let ready_peers = host.view.ready_nodes();
            let committee_size = host.metrics.members.load(Ordering::Relaxed);
            let ready = link && nats;
            let primes_ready = host.metrics.primes_ready.load(Ordering::Relaxed);
            let body = serde_json::json!({
                "ready": ready, "node_id": host.config.node_id, "link": link, "nats": nats,
                "peers_ready": ready_peers.len(), "ready_peers": ready_peers, "committee_size": committee_size, "primes_ready": primes_ready,
            });
            (if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, body.to_string())
        }
        "/metrics" => (StatusCode::OK, host.metrics.render()),
        _ => (StatusCode::NOT_FOUND, "not found\n".to_string()),
    };
    Ok(Response::builder().status(status).body(Full::new(Bytes::from(body))).expect("valid response"))
}
