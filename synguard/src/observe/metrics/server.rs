//! The HTTP side of `/metrics` on `--metrics-addr`: one task accepts scrapes, one samples the
//! port loads. A scrape gets OpenMetrics when it asks for it (Prometheus does), else the classic
//! Prometheus text format (curl, `promtool check metrics`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::observe::metrics::exposition::{Exporter, prometheus_text};

/// How often the sampler reads the per-port loads for the half-open estimates.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(1);
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds `addr` (at start-up, so a taken port is a start-up error).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

/// Serves `/metrics` on `listener` and runs the sampler, both as tasks of the current runtime.
pub fn spawn(listener: TcpListener, exporter: Exporter) {
    let exporter = Arc::new(exporter);
    let sampler = Arc::clone(&exporter);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(SAMPLE_PERIOD);
        loop {
            ticks.tick().await;
            sampler.sample();
        }
    });
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn!("metrics: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let exporter = Arc::clone(&exporter);
            tokio::spawn(async move {
                let service = service_fn(move |request| respond(request, Arc::clone(&exporter)));
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!("metrics: connection: {e}");
                }
            });
        }
    });
}

async fn respond(
    request: Request<Incoming>,
    exporter: Arc<Exporter>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status, content_type, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            CONTENT_TYPE,
            hyper::header::HeaderValue::from_static(content_type),
        );
        Ok(response)
    };
    if request.uri().path() != "/metrics" {
        return reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "synguard: metrics are at /metrics\n".into(),
        );
    }
    if request.method() != Method::GET {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    let openmetrics = request
        .headers()
        .get_all(hyper::header::ACCEPT)
        .iter()
        .any(|v| {
            v.to_str()
                .is_ok_and(|v| v.contains("application/openmetrics-text"))
        });
    // Map and socket reads are syscalls: keep them off the runtime's one thread.
    match tokio::task::spawn_blocking(move || exporter.render()).await {
        Ok(Ok(text)) if openmetrics => reply(StatusCode::OK, OPENMETRICS, text),
        Ok(Ok(text)) => reply(StatusCode::OK, PROMETHEUS_TEXT, prometheus_text(&text)),
        Ok(Err(e)) => {
            warn!("metrics: {e}");
            reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                "text/plain",
                format!("{e}\n"),
            )
        }
        Err(e) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain",
            format!("{e}\n"),
        ),
    }
}
