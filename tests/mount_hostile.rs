//! A mount of a broken or hostile service: listings that ignore `page` and claim a billion
//! pages, or answer with a gigabyte of JSON. `ls` of such a folder ends with EIO after a
//! bounded amount of work, the daemon's memory stays bounded, and the rest of the mount
//! keeps working.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use common::{fuse_available, sh, sh_out, Mount};
use futures::StreamExt;
use serde_json::{json, Value};

/// Body bytes the gigabyte answers produced (pulled by the HTTP stack) so far.
#[derive(Default)]
struct Produced(AtomicU64);

const GIB: u64 = 1 << 30;

type Params = HashMap<String, String>;

fn folder(id: &str, parent: Option<&str>) -> Value {
    json!({"id": id, "name": id, "parentId": parent, "createdAt": "2026-01-01T00:00:00Z"})
}

/// One handler for Get Folders and Get Files; the parent's id picks the behaviour.
async fn listing(
    State(produced): State<Arc<Produced>>,
    Query(q): Query<Params>,
    files: bool,
) -> Response {
    let parent = q
        .get("parentId")
        .or_else(|| q.get("folderId"))
        .cloned()
        .unwrap_or_default();
    let size: usize = q
        .get("pageSize")
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let same_page = |parent: &str| -> Vec<Value> {
        (0..size)
            .map(|i| folder(&format!("{parent}-{i}"), Some(parent)))
            .collect()
    };
    match parent.as_str() {
        // The root: three well-behaved folders, no files.
        "root" if files => {
            Json(json!({"total": 0, "page": 1, "pageSize": size, "lastPage": 1, "data": []}))
        }
        "root" => {
            let data: Vec<Value> = ["billion", "repeats", "gigabyte"]
                .iter()
                .map(|id| folder(id, None))
                .collect();
            Json(json!({"total": 3, "page": 1, "pageSize": size, "lastPage": 1, "data": data}))
        }
        // Ignores `page`, claims a billion pages.
        "billion" => Json(json!({
            "total": 100_000_000_000u64, "page": 1, "pageSize": size,
            "lastPage": 1_000_000_000u64, "data": same_page("billion")
        })),
        // Ignores `page`, claims fifty pages (within any limit): caught by the repeat.
        "repeats" => Json(json!({
            "page": 1, "pageSize": size, "lastPage": 50, "data": same_page("repeats")
        })),
        // A gigabyte of JSON, streamed without a Content-Length.
        "gigabyte" => {
            let item = br#"{"id":"x","name":"x","parentId":"gigabyte"},"#;
            let mut chunk = br#"{"data":["#.to_vec();
            while chunk.len() < 1 << 20 {
                chunk.extend_from_slice(item);
            }
            let chunk = bytes::Bytes::from(chunk);
            let stream = futures::stream::iter(0..GIB / chunk.len() as u64).map(move |_| {
                produced.0.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                Ok::<_, std::io::Error>(chunk.clone())
            });
            return (
                [("content-type", "application/json")],
                Body::from_stream(stream),
            )
                .into_response();
        }
        _ => Json(json!({"total": 0, "page": 1, "pageSize": size, "lastPage": 1, "data": []})),
    }
    .into_response()
}

struct Hostile {
    rt: tokio::runtime::Runtime,
    url: String,
    produced: Arc<Produced>,
}

fn start_hostile() -> Hostile {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let produced = Arc::new(Produced::default());
    let app = Router::new()
        .route(
            "/api/v1/media-manager/folders",
            get(|s: State<Arc<Produced>>, q: Query<Params>| listing(s, q, false)),
        )
        .route(
            "/api/v1/media-manager/files",
            get(|s: State<Arc<Produced>>, q: Query<Params>| listing(s, q, true)),
        )
        .with_state(produced.clone());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    Hostile { rt, url, produced }
}

/// Peak resident memory of a process, in KiB.
fn vm_hwm_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

#[test]
fn ls_of_a_hostile_listing_fails_with_eio_and_memory_stays_bounded() {
    if !fuse_available() {
        return;
    }
    let hostile = start_hostile();
    let m = Mount::at_url(&hostile.url, &[]);
    let root = m.path();

    // The well-behaved part of the service is listed.
    let names = sh(root, "ls -1");
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        ["billion", "gigabyte", "repeats"]
    );

    for dir in ["billion", "repeats", "gigabyte"] {
        // `timeout` turns a hang into exit status 124 instead of a stuck test.
        let out = sh_out(root, &format!("timeout 120 ls {dir}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(124), "ls {dir} hung");
        assert!(!out.status.success(), "ls {dir} succeeded");
        assert!(stderr.contains("Input/output error"), "ls {dir}: {stderr}");
    }

    // The daemon read no more of the gigabyte than the 64 MiB cap (plus what the socket
    // buffers held), and its peak memory stayed far below it.
    let produced = hostile.produced.0.load(Ordering::SeqCst);
    assert!(
        produced < 256 << 20,
        "{produced} bytes of the gigabyte pulled"
    );
    let hwm_mib = vm_hwm_kib(m.pid()) / 1024;
    eprintln!("daemon VmHWM after the hostile listings: {hwm_mib} MiB");
    assert!(hwm_mib < 256, "daemon peak RSS {hwm_mib} MiB");

    // Clear errors in the log, and the mount still answers.
    let log = m.log_text();
    assert!(log.contains("listing abandoned"), "{log}");
    assert!(log.contains("page 2 repeats page 1"), "{log}");
    assert!(log.contains("limit on API responses"), "{log}");
    assert_eq!(sh(root, "ls -1 | wc -l").trim(), "3");
    drop(m);
    drop(hostile.rt);
}
