//! Client behaviour against tiny local servers (axum, or raw TCP where a misbehaving
//! peer is needed). The contract suite (`crate::api::contract`) runs the shared behaviour
//! against the real embedded server and the mock.

mod calls;
mod cdn;
mod hostile;
mod paging;
mod upload;

use super::*;
use axum::http::HeaderMap as AxHeaders;
use axum::Router;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub(super) const TOKEN: &str = "kpt_unit_secret_token";

#[derive(Default)]
pub(super) struct Seen {
    pub(super) calls: AtomicU32,
    pub(super) auth: Mutex<Vec<Option<String>>>,
    pub(super) bodies: Mutex<Vec<(Option<String>, Vec<u8>)>>,
}

pub(super) type Shared = Arc<Seen>;

pub(super) fn record(seen: &Seen, headers: &AxHeaders) -> u32 {
    seen.auth.lock().unwrap().push(
        headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_string()),
    );
    seen.calls.fetch_add(1, Ordering::SeqCst) + 1
}

pub(super) async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

pub(super) fn client(base: &str) -> HttpClient {
    let mut cfg = ClientConfig::new(base, TOKEN);
    cfg.backoff_base = Duration::from_millis(5);
    cfg.backoff_max = Duration::from_millis(50);
    cfg.read_timeout = Duration::from_secs(5);
    HttpClient::new(cfg).unwrap()
}

pub(super) fn blob(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

pub(super) fn sha(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

pub(super) fn folder(id: &str, parent: Option<&str>) -> serde_json::Value {
    serde_json::json!({"id": id, "name": format!("n{id}"), "parentId": parent})
}

#[test]
fn base_url_is_normalised() {
    for (given, want) in [
        (
            "http://127.0.0.1:8787",
            "http://127.0.0.1:8787/api/v1/media-manager",
        ),
        (
            "http://127.0.0.1:8787/",
            "http://127.0.0.1:8787/api/v1/media-manager",
        ),
        (
            "https://apigw.klinkcx.com/api/v1/media-manager/",
            "https://apigw.klinkcx.com/api/v1/media-manager",
        ),
        ("https://h/prefix", "https://h/prefix/api/v1/media-manager"),
    ] {
        assert_eq!(api_base(given).unwrap().as_str(), want, "{given}");
    }
    assert_eq!(
        api_base("ftp://h").unwrap_err().kind,
        ApiErrorKind::InvalidInput
    );
    assert_eq!(
        api_base("not a url").unwrap_err().kind,
        ApiErrorKind::InvalidInput
    );
    let c = client("http://h:1/");
    assert_eq!(
        c.url(&["files", "a/b?c"]).as_str(),
        "http://h:1/api/v1/media-manager/files/a%2Fb%3Fc"
    );
}

#[test]
fn config_debug_hides_token() {
    let cfg = ClientConfig::new("http://h", TOKEN);
    let c = HttpClient::new(cfg.clone()).unwrap();
    assert!(!format!("{cfg:?}").contains(TOKEN));
    assert!(!format!("{c:?}").contains(TOKEN));
}
