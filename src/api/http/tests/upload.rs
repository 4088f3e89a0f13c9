//! Create File: the streamed body and its retry.

use super::*;
use axum::extract::State;
use axum::http::{HeaderMap as AxHeaders, StatusCode as AxStatus};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;

async fn upload_handler(
    State(seen): State<Shared>,
    headers: AxHeaders,
    body: axum::body::Bytes,
) -> Response {
    let n = record(&seen, &headers);
    seen.bodies.lock().unwrap().push((
        headers
            .get("content-length")
            .map(|v| v.to_str().unwrap().to_string()),
        body.to_vec(),
    ));
    if n == 1 {
        return (AxStatus::SERVICE_UNAVAILABLE, "busy").into_response();
    }
    use base64::Engine;
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(v["data"].as_str().unwrap())
        .unwrap();
    axum::Json(serde_json::json!({"data": {
        "id": "new", "folderId": v["folderId"], "title": v["title"],
        "upload": {"fileName": v["fileName"], "fileSize": bytes.len(), "fileUrl": sha(&bytes)}
    }}))
    .into_response()
}

#[tokio::test]
async fn upload_streams_exact_length_and_retries_503_with_a_fresh_body() {
    let seen = Shared::default();
    let base = serve(
        Router::new()
            .route("/api/v1/media-manager/files", post(upload_handler))
            .layer(axum::extract::DefaultBodyLimit::disable())
            .with_state(seen.clone()),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.bin");
    let data = blob(3 * crate::api::upload::CHUNK + 1);
    std::fs::write(&path, &data).unwrap();
    let meta = NewFile {
        file_name: "f.bin".into(),
        mime_type: "application/octet-stream".into(),
        title: Some("F".into()),
        folder_id: Some("dir".into()),
        ..Default::default()
    };
    let file = client(&base).create_file(&meta, &path).await.unwrap();
    assert_eq!(file.size(), data.len() as u64);
    assert_eq!(
        file.url(),
        Some(sha(&data).as_str()),
        "server saw the same bytes"
    );
    assert_eq!(file.folder_id.as_deref(), Some("dir"));
    let bodies = seen.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "503 then success");
    for (len, body) in bodies.iter() {
        assert_eq!(
            len.as_deref(),
            Some(&*body.len().to_string()),
            "exact Content-Length"
        );
        assert_eq!(sha(body), sha(&bodies[0].1), "retry re-sent the whole body");
    }
    let missing = client(&base)
        .create_file(&meta, &dir.path().join("missing"))
        .await
        .unwrap_err();
    assert_eq!(missing.kind, ApiErrorKind::Local);
}
