//! `--metrics-addr`: the counters of `mediafs status` in Prometheus text format at
//! `/metrics`. Each scrape builds a fresh registry from one status report, so the
//! numbers come from one place ([`crate::stats`]) and are never counted twice.

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::Context;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::stats::{Sources, Status};

type Labels = Vec<(String, String)>;

/// Prometheus text (OpenMetrics) for one status report.
pub fn render(st: &Status) -> String {
    let mut reg = <Registry>::with_prefix("mediafs");
    let requests = Family::<Labels, Counter>::default();
    for (op, n) in &st.requests {
        requests
            .get_or_create(&vec![("request".into(), op.clone())])
            .inc_by(*n);
    }
    reg.register("requests", "Remote requests by operation", requests);
    let errors = Family::<Labels, Counter>::default();
    for e in &st.errors_by_request {
        errors
            .get_or_create(&vec![
                ("request".into(), e.request.clone()),
                ("kind".into(), e.kind.clone()),
            ])
            .inc_by(e.count);
    }
    reg.register(
        "request_errors",
        "Failed remote requests by operation and error kind",
        errors,
    );
    let gauge = |v: u64| {
        let g = Gauge::<i64>::default();
        g.set(v as i64);
        g
    };
    reg.register(
        "pending_uploads",
        "Uploads waiting in the pending area",
        gauge(st.pending_uploads.len() as u64),
    );
    reg.register(
        "pending_upload_bytes",
        "Bytes of uploads waiting in the pending area",
        gauge(st.pending_uploads.iter().map(|u| u.size).sum()),
    );
    reg.register(
        "uploads_in_flight",
        "Uploads running now",
        gauge(st.uploads_in_flight.len() as u64),
    );
    reg.register(
        "cache_used_bytes",
        "Bytes held by the block cache",
        gauge(st.cache.used_bytes),
    );
    reg.register(
        "cache_capacity_bytes",
        "Size of the block cache (--cache-size)",
        gauge(st.cache.capacity_bytes),
    );
    let hits = Counter::<u64>::default();
    hits.inc_by(st.cache.hits);
    reg.register("cache_hits", "Blocks read from the cache", hits);
    let misses = Counter::<u64>::default();
    misses.inc_by(st.cache.misses);
    reg.register("cache_misses", "Blocks that had to be fetched", misses);
    let hit_rate = Gauge::<f64, AtomicU64>::default();
    hit_rate.set(st.cache.hit_rate.unwrap_or(0.0));
    reg.register(
        "cache_hit_ratio",
        "Share of blocks read from the cache",
        hit_rate,
    );
    reg.register(
        "uptime_seconds",
        "Seconds since the mount started",
        gauge(st.uptime_secs),
    );
    let mut out = String::new();
    encode(&mut out, &reg).expect("writing to a String");
    out
}

/// Serves `/metrics` on `addr`; returns the bound address (port 0 picks one).
pub async fn serve(addr: SocketAddr, sources: Arc<Sources>) -> anyhow::Result<SocketAddr> {
    use axum::http::header;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let sources = sources.clone();
            async move {
                (
                    [(
                        header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    render(&sources.status()),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--metrics-addr {addr}"))?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!("metrics server: {e}");
        }
    });
    Ok(bound)
}
