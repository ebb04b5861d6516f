//! The HTTP listener (`stats.prometheus_listen`): `GET /metrics` (Prometheus), `/healthz` (the
//! process is alive) and `/readyz` (see [`crate::health`]), served by hyper over HTTP/1.1 with
//! a timeout on reading the request head and on the whole exchange.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::metrics::Stats;

/// How long a client may take to send its request head, and the whole exchange: a client that
/// connects and says nothing must not hold a task (and a socket) forever.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request head read (hyper's smallest buffer); Prometheus sends a few hundred
/// bytes. A longer one is answered 431.
const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// What the endpoints read.
struct Probes {
    stats: Arc<Stats>,
    lag: Arc<AtomicI64>,
    kafka_up: Arc<AtomicBool>,
}

/// Serves the endpoints on `addr` until the task is aborted.
pub async fn serve(
    addr: &str,
    stats: Arc<Stats>,
    lag: Arc<AtomicI64>,
    kafka_up: Arc<AtomicBool>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    info!(addr, "serving /metrics, /healthz and /readyz");
    let probes = Arc::new(Probes {
        stats,
        lag,
        kafka_up,
    });
    Ok(tokio::spawn(accept(listener, probes, IO_TIMEOUT)))
}

async fn accept(listener: TcpListener, probes: Arc<Probes>, timeout: Duration) {
    loop {
        let (sock, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "metrics endpoint accept failed");
                // Out of file descriptors, typically: give connections time to close rather
                // than spin on the error.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let probes = probes.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let probes = probes.clone();
                async move { Ok::<_, Infallible>(answer(&req, &probes)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .max_buf_size(MAX_REQUEST_BYTES)
                .keep_alive(false)
                .serve_connection(TokioIo::new(sock), service);
            // A client that stops reading the answer is dropped too.
            let _ = tokio::time::timeout(timeout * 2, conn).await;
        });
    }
}

fn answer(req: &Request<Incoming>, probes: &Probes) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET or HEAD\n".into());
    }
    match req.uri().path() {
        "/metrics" => text(StatusCode::OK, probes.stats.prometheus(&probes.lag)),
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => {
            let why = crate::health::not_ready(&probes.stats, &probes.kafka_up);
            if why.is_empty() {
                text(StatusCode::OK, "ready\n".into())
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready\n{}\n", why.join("\n")),
                )
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server with `timeout`, its address, and its task.
    async fn server(
        timeout: Duration,
        stats: Arc<Stats>,
        kafka_up: bool,
    ) -> (String, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let probes = Arc::new(Probes {
            stats,
            lag: Arc::new(AtomicI64::new(-1)),
            kafka_up: Arc::new(AtomicBool::new(kafka_up)),
        });
        (
            addr.clone(),
            tokio::spawn(accept(listener, probes, timeout)),
        )
    }

    /// Sends `request` whole and reads the answer to its end.
    async fn exchange(addr: &str, request: &[u8]) -> String {
        let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
        sock.write_all(request).await.unwrap();
        let mut body = Vec::new();
        sock.read_to_end(&mut body).await.unwrap();
        String::from_utf8_lossy(&body).into_owned()
    }

    #[tokio::test]
    async fn metrics_health_and_readiness_answer() {
        let stats = Arc::new(Stats::default());
        Stats::add(&stats.consumed, 3);
        let (addr, task) = server(IO_TIMEOUT, stats.clone(), true).await;
        let body = exchange(&addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(body.contains("floe_messages_consumed_total 3"), "{body}");
        assert!(
            !body.contains("floe_consumer_lag "),
            "unknown lag is left out"
        );
        let body = exchange(&addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        // Snowflake not reached yet.
        let body = exchange(&addr, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(body.starts_with("HTTP/1.1 503"), "{body}");
        assert!(
            body.ends_with("not ready\nsnowflake: not reached yet\n"),
            "{body}"
        );
        stats.health.snowflake_up();
        let body = exchange(&addr, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(body.ends_with("ready\n"), "{body}");
        task.abort();
    }

    #[tokio::test]
    async fn a_silent_client_is_dropped_and_others_are_served() {
        let timeout = Duration::from_millis(300);
        let stats = Arc::new(Stats::default());
        Stats::add(&stats.loaded, 5);
        let (addr, task) = server(timeout, stats, false).await;
        let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
        // While a client sits silent, a normal scrape (sent in two pieces) is answered.
        let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
        sock.write_all(b"GET /metrics?x=1 HTTP/1.1\r\n")
            .await
            .unwrap();
        sock.write_all(b"Host: x\r\n\r\n").await.unwrap();
        let mut body = String::new();
        sock.read_to_string(&mut body).await.unwrap();
        assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
        assert!(body.contains("floe_rows_loaded_total 5\n"), "{body}");
        // The silent client's connection is closed once the timeout passes, with no answer.
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(timeout * 10, silent.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "the silent connection was kept open");
        assert!(rest.is_empty(), "{rest:?}");
        task.abort();
    }

    #[tokio::test]
    async fn an_endless_request_head_and_other_paths_are_refused() {
        let (addr, task) = server(Duration::from_secs(5), Arc::new(Stats::default()), true).await;
        let mut request = b"GET /metrics HTTP/1.1\r\n".to_vec();
        request.extend(std::iter::repeat_n(b'x', MAX_REQUEST_BYTES + 10));
        let body = exchange(&addr, &request).await;
        assert!(body.starts_with("HTTP/1.1 431"), "{body}");
        // Another path than /metrics, a prefix of it, and another method are not the metrics.
        for (request, status) in [
            ("GET /metricsx HTTP/1.1\r\nHost: x\r\n\r\n", "404"),
            (
                "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
                "405",
            ),
            ("GET / HTTP/1.1\r\nHost: x\r\n\r\n", "404"),
        ] {
            let body = exchange(&addr, request.as_bytes()).await;
            assert!(
                body.starts_with(&format!("HTTP/1.1 {status}")),
                "{request}: {body}"
            );
            assert!(!body.contains("floe_"), "{request}: {body}");
        }
        task.abort();
    }
}
