//! Range reads of signed URLs.

use super::*;
use crate::api::http::cdn::parse_content_range;
use axum::extract::{Query, State};
use axum::http::{HeaderMap as AxHeaders, StatusCode as AxStatus};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[test]
fn content_range_parses() {
    assert_eq!(
        parse_content_range("bytes 0-99/1000"),
        Some((0, 99, Some(1000)))
    );
    assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9, None)));
    assert_eq!(parse_content_range("items 0-1/2"), None);
}

/// A CDN that serves `blob(n)`; `?ignore` answers 200 with the whole body; no auth allowed.
async fn cdn(
    State(seen): State<Shared>,
    headers: AxHeaders,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    record(&seen, &headers);
    if q.contains_key("expired") {
        return (
            AxStatus::FORBIDDEN,
            "<Error><Code>AccessDenied</Code></Error>",
        )
            .into_response();
    }
    let data = blob(1_000_000);
    let range = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.split_once('-'))
        .map(|(a, b)| (a.parse::<usize>().unwrap(), b.parse::<usize>().unwrap()));
    match range {
        Some((a, b)) if !q.contains_key("ignore") => {
            if a >= data.len() {
                return (
                    AxStatus::RANGE_NOT_SATISFIABLE,
                    [("content-range", format!("bytes */{}", data.len()))],
                )
                    .into_response();
            }
            // `?cap` serves at most 1000 bytes per request, like a capped CDN.
            let mut b = b.min(data.len() - 1);
            if q.contains_key("cap") {
                b = b.min(a + 999);
            }
            (
                AxStatus::PARTIAL_CONTENT,
                [("content-range", format!("bytes {a}-{b}/{}", data.len()))],
                data[a..=b].to_vec(),
            )
                .into_response()
        }
        _ => (AxStatus::OK, data).into_response(),
    }
}

#[tokio::test]
async fn range_reads_honoured_ignored_capped_eof_and_expired() {
    let seen = Shared::default();
    let base = serve(
        Router::new()
            .route("/cdn/blob.bin", get(cdn))
            .with_state(seen.clone()),
    )
    .await;
    let c = client(&base);
    let data = blob(1_000_000);
    for q in [
        "?Signature=s",
        "?ignore=1&Signature=s",
        "?cap=1&Signature=s",
    ] {
        let url = format!("{base}/cdn/blob.bin{q}");
        for (off, len) in [
            (0u64, 10u64),
            (1, 4095),
            (4095, 70_000),
            (999_999, 10),
            (990_000, 20_000),
            (1_000_000, 5),
            (2_000_000, 5),
        ] {
            let got = c.read_range(&url, off, len).await.unwrap();
            let lo = (off as usize).min(data.len());
            let hi = ((off + len) as usize).min(data.len());
            assert_eq!(sha(&got), sha(&data[lo..hi]), "{q} {off}+{len}");
        }
    }
    assert!(
        seen.auth.lock().unwrap().iter().all(Option::is_none),
        "no auth to the CDN"
    );

    let url = format!("{base}/cdn/blob.bin?expired=1&Signature=supersecret");
    let calls = seen.calls.load(Ordering::SeqCst);
    let err = c.read_range(&url, 0, 10).await.unwrap_err();
    assert_eq!(err.kind, ApiErrorKind::UrlExpired);
    assert_eq!(
        seen.calls.load(Ordering::SeqCst),
        calls + 1,
        "403 not retried"
    );
    assert!(!format!("{err:?}").contains("supersecret"));
}

/// Raw TCP CDN: the first answer drops the connection mid-body, the second is whole.
#[tokio::test]
async fn truncated_range_body_is_retried() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let data = blob(100);
    let served = Arc::new(AtomicU32::new(0));
    let (d, s) = (data.clone(), served.clone());
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = sock.read(&mut buf).await.unwrap();
            let n = s.fetch_add(1, Ordering::SeqCst);
            let head = "HTTP/1.1 206 Partial Content\r\nContent-Length: 100\r\n\
                        Content-Range: bytes 0-99/1000\r\nConnection: close\r\n\r\n";
            sock.write_all(head.as_bytes()).await.unwrap();
            let body = if n == 0 { &d[..50] } else { &d[..] };
            sock.write_all(body).await.unwrap();
            sock.shutdown().await.unwrap();
        }
    });
    let c = client(&format!("http://{addr}"));
    let got = c
        .read_range(&format!("http://{addr}/cdn/x?Signature=s"), 0, 100)
        .await
        .unwrap();
    assert_eq!(sha(&got), sha(&data));
    assert_eq!(served.load(Ordering::SeqCst), 2);
}
