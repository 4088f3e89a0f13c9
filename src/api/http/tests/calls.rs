//! API calls: retries, idempotency, status → error, decoding, probe, stalls.

use super::*;
use crate::api::http::response::server_message;
use axum::extract::State;
use axum::http::{HeaderMap as AxHeaders, StatusCode as AxStatus};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

#[test]
fn server_message_extraction() {
    assert_eq!(
        server_message(br#"{"statusCode":409,"message":"folder not empty"}"#).as_deref(),
        Some("folder not empty")
    );
    assert_eq!(
        server_message(br#"{"message":["name too long","bad"]}"#).as_deref(),
        Some("name too long; bad")
    );
    assert_eq!(
        server_message(b"<html>\n  Bad  gateway </html>").as_deref(),
        Some("<html> Bad gateway </html>")
    );
    assert_eq!(server_message(b""), None);
}

/// Answers 429 (Retry-After: 0) `fails` times, then a folder.
async fn flaky_get(State(seen): State<Shared>, headers: AxHeaders) -> Response {
    let n = record(&seen, &headers);
    if n <= 2 {
        (
            AxStatus::TOO_MANY_REQUESTS,
            [("retry-after", "0")],
            r#"{"statusCode":429,"message":"slow down"}"#,
        )
            .into_response()
    } else {
        axum::Json(serde_json::json!({"data": folder("f", None)})).into_response()
    }
}

#[tokio::test]
async fn retries_429_then_succeeds_and_gives_up_eventually() {
    let seen = Shared::default();
    let base = serve(
        Router::new()
            .route("/api/v1/media-manager/folders/{id}", get(flaky_get))
            .with_state(seen.clone()),
    )
    .await;
    let c = client(&base);
    assert_eq!(c.get_folder("f").await.unwrap().id, "f");
    assert_eq!(seen.calls.load(Ordering::SeqCst), 3);

    // Two attempts only: the two 429s exhaust them.
    seen.calls.store(0, Ordering::SeqCst);
    let mut cfg = c.config().clone();
    cfg.max_attempts = 2;
    let c2 = HttpClient::new(cfg).unwrap();
    let err = c2.get_folder("f").await.unwrap_err();
    assert_eq!(err.kind, ApiErrorKind::RateLimited);
    assert_eq!(err.errno(), libc::EAGAIN);
    assert!(err.message.contains("slow down"), "{err}");
}

async fn status_by_name(State(seen): State<Shared>, headers: AxHeaders, body: String) -> Response {
    record(&seen, &headers);
    let name = serde_json::from_str::<serde_json::Value>(&body).unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string();
    let code: u16 = name.parse().unwrap_or(200);
    if code == 200 {
        return axum::Json(serde_json::json!({"data": folder("new", None)})).into_response();
    }
    (
        AxStatus::from_u16(code).unwrap(),
        format!(r#"{{"statusCode":{code},"message":"status {code} with Bearer {TOKEN}"}}"#),
    )
        .into_response()
}

#[tokio::test]
async fn post_retries_only_when_surely_unprocessed() {
    let seen = Shared::default();
    let base = serve(
        Router::new()
            .route("/api/v1/media-manager/folders", post(status_by_name))
            .with_state(seen.clone()),
    )
    .await;
    let c = client(&base);
    for (code, kind, calls) in [
        (500, ApiErrorKind::Server, 1),
        (503, ApiErrorKind::Server, 6),
        // A 409 to a create is a taken name (unique-names), not a non-empty folder.
        (409, ApiErrorKind::NameTaken, 1),
        (422, ApiErrorKind::InvalidInput, 1),
        (401, ApiErrorKind::Unauthorized, 1),
    ] {
        seen.calls.store(0, Ordering::SeqCst);
        let err = c.create_folder(&code.to_string(), None).await.unwrap_err();
        assert_eq!(err.kind, kind, "{code}");
        assert_eq!(err.status, Some(code), "{code}");
        assert_eq!(
            seen.calls.load(Ordering::SeqCst),
            calls,
            "attempts for {code}"
        );
        assert!(err.message.contains(&format!("status {code}")), "{err}");
        assert!(!format!("{err:?}").contains(TOKEN));
        assert!(!err.to_string().contains(TOKEN));
    }
    assert_eq!(c.create_folder("ok", None).await.unwrap().id, "new");
}

#[tokio::test]
async fn delete_accepts_200_204_and_treats_404_on_retry_as_done() {
    let seen = Shared::default();
    async fn del(
        State(seen): State<Shared>,
        headers: AxHeaders,
        axum::extract::Path(id): axum::extract::Path<String>,
    ) -> Response {
        let n = record(&seen, &headers);
        match id.as_str() {
            "a" => AxStatus::NO_CONTENT.into_response(),
            "b" => (AxStatus::OK, "whatever, not json").into_response(),
            "c" if n % 2 == 1 => AxStatus::BAD_GATEWAY.into_response(),
            _ => AxStatus::NOT_FOUND.into_response(),
        }
    }
    let base = serve(
        Router::new()
            .route(
                "/api/v1/media-manager/files/{id}",
                axum::routing::delete(del),
            )
            .with_state(seen.clone()),
    )
    .await;
    let c = client(&base);
    c.delete_file("a").await.unwrap();
    c.delete_file("b").await.unwrap();
    c.delete_file("c").await.unwrap();
    let calls = seen.calls.load(Ordering::SeqCst);
    assert_eq!(
        c.delete_file("zz").await.unwrap_err().kind,
        ApiErrorKind::NotFound
    );
    assert_eq!(seen.calls.load(Ordering::SeqCst), calls + 1);
}

#[tokio::test]
async fn non_json_success_is_a_decode_error() {
    let seen = Shared::default();
    async fn html(State(seen): State<Shared>, headers: AxHeaders) -> Response {
        record(&seen, &headers);
        (AxStatus::OK, "<html>login</html>").into_response()
    }
    let base = serve(
        Router::new()
            .route("/api/v1/media-manager/files/{id}", get(html))
            .with_state(seen.clone()),
    )
    .await;
    let err = client(&base).get_file("x").await.unwrap_err();
    assert_eq!(err.kind, ApiErrorKind::Decode);
    assert_eq!(seen.calls.load(Ordering::SeqCst), 1);
}

/// A peer that accepts connections and never reads or answers.
async fn black_hole() -> (String, Arc<AtomicU32>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU32::new(0));
    let a = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            held.push(sock);
        }
    });
    (format!("http://{addr}"), accepted)
}

#[tokio::test]
async fn stalled_upload_fails_without_retry_and_silent_get_is_retried() {
    let (base, accepted) = black_hole().await;
    let mut cfg = ClientConfig::new(&base, TOKEN);
    cfg.read_timeout = Duration::from_millis(300);
    cfg.connect_timeout = Duration::from_millis(300);
    cfg.backoff_base = Duration::from_millis(1);
    cfg.max_attempts = 3;
    let c = HttpClient::new(cfg).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    // Larger than any socket buffer, so the send stalls.
    std::fs::write(&path, blob(32 << 20)).unwrap();
    let meta = NewFile {
        file_name: "big.bin".into(),
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let err = c.create_file(&meta, &path).await.unwrap_err();
    assert_eq!(err.kind, ApiErrorKind::Transport, "{err}");
    assert!(err.message.contains("not retried"), "{err}");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "a stalled POST is not repeated"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());

    let err = c.get_file("x").await.unwrap_err();
    assert_eq!(err.kind, ApiErrorKind::Transport, "{err}");
    assert!(err.message.contains("timed out"), "{err}");
    assert_eq!(accepted.load(Ordering::SeqCst), 4, "GET tried 3 times");
}

#[tokio::test]
async fn probe_fails_fast_on_unreachable_and_bad_token() {
    // A port that was just closed: connection refused.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let c = client(&format!("http://127.0.0.1:{port}"));
    let t = std::time::Instant::now();
    let err = c.probe().await.unwrap_err();
    assert_eq!(err.kind, ApiErrorKind::Transport);
    assert!(err.message.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(!format!("{err:?}").contains(TOKEN));

    let seen = Shared::default();
    async fn deny(State(seen): State<Shared>, headers: AxHeaders) -> Response {
        record(&seen, &headers);
        (
            AxStatus::UNAUTHORIZED,
            r#"{"statusCode":401,"message":"Unauthorized"}"#,
        )
            .into_response()
    }
    let base = serve(
        Router::new()
            .route("/api/v1/media-manager/folders", get(deny))
            .with_state(seen.clone()),
    )
    .await;
    let err = client(&base).probe().await.unwrap_err();
    assert_eq!(err.kind, ApiErrorKind::Unauthorized);
    assert_eq!(seen.calls.load(Ordering::SeqCst), 1);
    assert!(err.message.contains("rejected the token"), "{err}");
    assert!(!format!("{err:?}").contains(TOKEN));
}
