//! A broken or hostile service cannot make the client walk forever or buffer without
//! bound: listings that ignore `page`, announce absurd sizes or never end, and answers of
//! a gigabyte, each end in a clear error after a bounded amount of work.

use super::*;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::collections::HashMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Folders `p{page}-{i}` (or `same-{i}` when `page` is ignored) under the root, with the
/// paging figures each case asks for.
async fn hostile_folders(
    State(seen): State<Shared>,
    headers: AxHeaders,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    record(&seen, &headers);
    let page: u64 = q["page"].parse().unwrap();
    let size: usize = q["pageSize"].parse().unwrap();
    let case = q["parentId"].as_str();
    let page_of = |prefix: &str, n: usize| -> Vec<serde_json::Value> {
        (0..n)
            .map(|i| folder(&format!("{prefix}-{i}"), Some(case)))
            .collect()
    };
    let body = match case {
        // Ignores `page` and claims a billion pages.
        "billion" => serde_json::json!({
            "total": 100_000_000_000u64, "page": 1, "pageSize": size,
            "lastPage": 1_000_000_000u64, "data": page_of("same", size)
        }),
        // Ignores `page`, claims five pages.
        "ignores-page" => serde_json::json!({
            "page": 1, "pageSize": size, "lastPage": 5, "data": page_of("same", size)
        }),
        // Ignores `page`, says nothing of the size: a walk until a short page never ends.
        "ignores-page-silently" => serde_json::json!({
            "page": 1, "pageSize": size, "data": page_of("same", size)
        }),
        // Fresh full pages forever, nothing announced.
        "endless" => serde_json::json!({
            "page": page, "pageSize": size, "data": page_of(&format!("p{page}"), size)
        }),
        // Announces 150 entries, then every page is full.
        "more-than-announced" => serde_json::json!({
            "total": 150, "page": page, "pageSize": size, "lastPage": 2,
            "data": page_of(&format!("p{page}"), size * 4)
        }),
        other => panic!("unknown case {other}"),
    };
    axum::Json(body).into_response()
}

async fn hostile_client() -> (HttpClient, Shared) {
    let seen = Shared::default();
    let base = serve(
        Router::new()
            .route("/api/v1/media-manager/folders", get(hostile_folders))
            .with_state(seen.clone()),
    )
    .await;
    let mut cfg = client(&base).config().clone();
    cfg.max_list_entries = 10_000;
    (HttpClient::new(cfg).unwrap(), seen)
}

#[tokio::test]
async fn listings_that_ignore_paging_or_never_end_fail_clearly() {
    let (c, seen) = hostile_client().await;
    let list = |case: &'static str| {
        let (c, seen) = (&c, &seen);
        async move {
            seen.calls.store(0, Ordering::SeqCst);
            let err = c
                .list_folders(&Parent::Folder(case.into()))
                .await
                .unwrap_err();
            assert_eq!(err.kind, ApiErrorKind::Decode, "{case}: {err}");
            assert_eq!(err.errno(), libc::EIO);
            assert!(err.message.contains("listing abandoned"), "{case}: {err}");
            (err.message, seen.calls.load(Ordering::SeqCst))
        }
    };

    // Refused on its first page: the announcement alone is over the limit.
    let (msg, calls) = list("billion").await;
    assert!(msg.contains("announces 100000000000 entries"), "{msg}");
    assert!(msg.contains("limit of 10000"), "{msg}");
    assert_eq!(calls, 1);

    // Page 2 equals page 1: stopped there.
    let (msg, calls) = list("ignores-page-silently").await;
    assert!(msg.contains("page 2 repeats page 1"), "{msg}");
    assert_eq!(calls, 2);

    // Nothing announced, fresh pages forever: the entry limit ends it.
    let (msg, calls) = list("endless").await;
    assert!(
        msg.contains("more than the limit of 10000 entries"),
        "{msg}"
    );
    assert_eq!(calls, 101, "100 pages of 100 fit the limit");

    // 150 announced (two pages), 400 on the first page alone: more than announced + margin.
    let (msg, calls) = list("more-than-announced").await;
    assert!(
        msg.contains("400 entries arrived where the first page announced at most 200"),
        "{msg}"
    );
    assert_eq!(calls, 1);

    // Last, as its pages fetched ahead (dropped unread) may still reach the server later.
    let (msg, calls) = list("ignores-page").await;
    assert!(msg.contains("page 2 repeats page 1"), "{msg}");
    assert!(calls <= 5, "{calls}");
}

/// A raw TCP service whose every answer is a 200 with a JSON body of `total` bytes (a
/// listing of endless folders), with or without `Content-Length`. Returns its URL, the
/// connections it accepted and the body bytes it managed to send.
async fn gigabyte_server(with_length: bool) -> (String, Arc<AtomicU32>, Arc<AtomicU64>) {
    const TOTAL: u64 = 1 << 30;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU32::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let (a, s) = (accepted.clone(), sent.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            let s = s.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let _ = sock.read(&mut buf).await;
                let head = if with_length {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                         Content-Length: {TOTAL}\r\n\r\n"
                    )
                } else {
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                     Connection: close\r\n\r\n"
                        .to_string()
                };
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let item = br#"{"id":"x","name":"n","parentId":null},"#;
                let mut chunk = br#"{"data":["#.to_vec();
                while chunk.len() < 1 << 20 {
                    chunk.extend_from_slice(item);
                }
                let mut done = 0u64;
                while done < TOTAL {
                    let n = (chunk.len() as u64).min(TOTAL - done) as usize;
                    if sock.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    done += n as u64;
                    s.fetch_add(n as u64, Ordering::SeqCst);
                }
            });
        }
    });
    (format!("http://{addr}"), accepted, sent)
}

#[tokio::test]
async fn a_gigabyte_answer_is_refused_at_the_cap() {
    for with_length in [true, false] {
        let (base, accepted, sent) = gigabyte_server(with_length).await;
        let c = client(&base);
        assert_eq!(c.config().max_response_bytes, 64 << 20, "the default cap");
        let err = c.list_folders(&Parent::Root).await.unwrap_err();
        assert_eq!(err.kind, ApiErrorKind::Decode, "{err}");
        assert!(
            err.message
                .contains("answer larger than the 64 MiB limit on API responses"),
            "{err}"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "not retried");
        // The client stopped reading at the cap: the server could not push much more than
        // the cap plus the socket buffers (with a Content-Length, nothing was read at all).
        let pushed = sent.load(Ordering::SeqCst);
        assert!(
            pushed < (64 + 32) << 20,
            "{with_length}: {pushed} bytes sent"
        );
    }
}
