//! The embedded server over real HTTP, driven by a raw reqwest client.

mod common;

use common::{pseudo_random, sha256 as sha};

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use mediafs::server::{self, ServerConfig, ServerHandle};
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};

const TOKEN: &str = "t0k";

struct Env {
    srv: ServerHandle,
    http: Client,
    _dir: tempfile::TempDir,
}

impl Env {
    async fn new() -> Env {
        Env::with(|_| {}).await
    }

    async fn with(tweak: impl FnOnce(&mut ServerConfig)) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = ServerConfig::for_tests(dir.path().to_path_buf(), TOKEN);
        tweak(&mut cfg);
        let srv = server::start(cfg).await.unwrap();
        Env {
            srv,
            http: Client::new(),
            _dir: dir,
        }
    }

    fn api(&self, path: &str) -> String {
        format!("{}/api/v1/media-manager{path}", self.srv.base_url())
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.api(path)).bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let v = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
        };
        (status, v)
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.call(method.clone(), path, body).await;
        assert_eq!(s, StatusCode::OK, "{method} {path}: {v}");
        v
    }

    async fn mkdir(&self, name: &str, parent: Option<&str>) -> String {
        let v = self
            .ok(
                Method::POST,
                "/folders",
                Some(json!({"name": name, "parentId": parent})),
            )
            .await;
        v["data"]["id"].as_str().unwrap().to_string()
    }

    async fn upload(&self, name: &str, folder: Option<&str>, bytes: &[u8]) -> Value {
        let body = json!({
            "data": STANDARD.encode(bytes),
            "fileName": name,
            "mimeType": "application/octet-stream",
            "folderId": folder,
        });
        self.ok(Method::POST, "/files", Some(body)).await["data"].clone()
    }

    async fn emulator(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method, format!("{}/_emulator/{path}", self.srv.base_url()))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        assert!(resp.status().is_success());
        resp.json().await.unwrap()
    }
}

fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn folder_crud_moves_and_conflicts() {
    let env = Env::new().await;
    let a = env.mkdir("a", None).await;
    let b = env.mkdir("b", Some(&a)).await;

    let got = env.ok(Method::GET, &format!("/folders/{b}"), None).await;
    assert_eq!(got["data"]["name"], "b");
    assert_eq!(got["data"]["parentId"], a.as_str());
    let ts = regex::Regex::new(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$").unwrap();
    assert!(ts.is_match(got["data"]["createdAt"].as_str().unwrap()));
    assert_eq!(uuid::Uuid::parse_str(&b).unwrap().get_version_num(), 7);

    // Filters: root lists only a; a's children only b; no filter both.
    let root = env.ok(Method::GET, "/folders?parentId=root", None).await;
    assert_eq!(ids(&root), vec![a.clone()]);
    let kids = env
        .ok(Method::GET, &format!("/folders?parentId={a}"), None)
        .await;
    assert_eq!(ids(&kids), vec![b.clone()]);
    let all = env.ok(Method::GET, "/folders", None).await;
    assert_eq!(all["total"], 2);

    // Rename, then moving a into its own child is refused.
    let renamed = env
        .ok(
            Method::PATCH,
            &format!("/folders/{b}"),
            Some(json!({"name": "b2"})),
        )
        .await;
    assert_eq!(renamed["data"]["name"], "b2");
    assert_ne!(renamed["data"]["updatedAt"], got["data"]["updatedAt"]);
    let (s, v) = env
        .call(
            Method::PATCH,
            &format!("/folders/{a}"),
            Some(json!({"parentId": b})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["statusCode"], 422);

    // Non-empty folder: 409; after moving b to the root, a can go.
    let (s, v) = env
        .call(Method::DELETE, &format!("/folders/{a}"), None)
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["statusCode"], 409);
    env.ok(
        Method::PATCH,
        &format!("/folders/{b}"),
        Some(json!({"parentId": null})),
    )
    .await;
    env.ok(Method::DELETE, &format!("/folders/{a}"), None).await;
    let (s, _) = env.call(Method::GET, &format!("/folders/{a}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Validation.
    let (s, _) = env
        .call(Method::POST, "/folders", Some(json!({"name": ""})))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, _) = env
        .call(
            Method::POST,
            "/folders",
            Some(json!({"name": "x", "parentId": "nope"})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = env.call(Method::GET, "/folders?page=0", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = env.call(Method::GET, "/folders?pageSize=abc", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = env.call(Method::GET, "/nothing-here", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["statusCode"], 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn file_crud_and_validation() {
    let env = Env::new().await;
    let dir = env.mkdir("pics", None).await;
    let body = json!({
        "fileName": "red-pixel.png",
        "mimeType": "image/png",
        "title": "Red Pixel Test",
        "description": "A tiny test image to verify upload",
        "altText": "Alt text",
        "isPrivate": false,
        "folderId": dir,
        "isFavorite": true,
        "sortOrder": 0,
        "data": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==",
    });
    let created = env.ok(Method::POST, "/files", Some(body)).await["data"].clone();
    let keys: Vec<&str> = created
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    for k in [
        "id",
        "uploadId",
        "folderId",
        "title",
        "description",
        "altText",
        "sortOrder",
        "isFavorite",
        "isPrivate",
        "createdAt",
        "updatedAt",
        "upload",
    ] {
        assert!(keys.contains(&k), "missing {k} in {created}");
    }
    assert_eq!(created["upload"]["fileSize"], 70);
    assert_eq!(created["upload"]["fileName"], "red-pixel.png");
    assert_eq!(created["upload"]["mimeType"], "image/png");
    assert_eq!(created["upload"]["id"], created["uploadId"]);
    assert_eq!(created["isFavorite"], true);
    let id = created["id"].as_str().unwrap().to_string();

    // Title defaults to the file name.
    let plain = env.upload("plain.txt", None, b"hi").await;
    assert_eq!(plain["title"], "plain.txt");
    assert_eq!(plain["folderId"], Value::Null);

    let by_folder = env
        .ok(Method::GET, &format!("/files?folderId={dir}"), None)
        .await;
    assert_eq!(ids(&by_folder), vec![id.clone()]);
    let at_root = env.ok(Method::GET, "/files?folderId=root", None).await;
    assert_eq!(ids(&at_root), vec![plain["id"].as_str().unwrap()]);

    // Update: title, null description, move to root.
    let updated = env
        .ok(
            Method::PATCH,
            &format!("/files/{id}"),
            Some(json!({"title": "t2", "description": null, "folderId": null, "sortOrder": 5})),
        )
        .await["data"]
        .clone();
    assert_eq!(updated["title"], "t2");
    assert_eq!(updated["description"], Value::Null);
    assert_eq!(updated["folderId"], Value::Null);
    assert_eq!(updated["sortOrder"], 5);
    assert_eq!(updated["upload"]["fileName"], "red-pixel.png");
    assert_ne!(updated["updatedAt"], created["updatedAt"]);
    let (s, _) = env
        .call(
            Method::PATCH,
            &format!("/files/{id}"),
            Some(json!({"isFavorite": "yes"})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    // Validation of Create File.
    for (body, want) in [
        (json!({"data": "QUJD"}), StatusCode::UNPROCESSABLE_ENTITY),
        (json!({"fileName": "x"}), StatusCode::UNPROCESSABLE_ENTITY),
        (
            json!({"fileName": "x", "data": "Q!!"}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"fileName": "x", "data": "QUJD", "folderId": "nope"}),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let (s, v) = env.call(Method::POST, "/files", Some(body.clone())).await;
        assert_eq!(s, want, "{body}: {v}");
        assert_eq!(v["statusCode"], want.as_u16());
    }

    // Delete: the file and its bytes are gone.
    let url = updated["upload"]["fileUrl"].as_str().unwrap().to_string();
    env.ok(Method::DELETE, &format!("/files/{id}"), None).await;
    let (s, _) = env.call(Method::GET, &format!("/files/{id}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let r = env.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    // Only the one remaining blob is on disk.
    let blobs = std::fs::read_dir(env._dir.path().join("blobs"))
        .unwrap()
        .count();
    assert_eq!(blobs, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn paging_walks_every_file_once() {
    let env = Env::new().await;
    let dir = env.mkdir("many", None).await;
    for i in 0..250 {
        env.upload(&format!("f{i}.txt"), Some(&dir), format!("{i}").as_bytes())
            .await;
    }
    let mut seen = std::collections::HashSet::new();
    for page in 1..=3 {
        let v = env
            .ok(
                Method::GET,
                &format!("/files?folderId={dir}&page={page}&pageSize=100"),
                None,
            )
            .await;
        assert_eq!(v["total"], 250);
        assert_eq!(v["lastPage"], 3);
        assert_eq!(v["page"], page);
        assert_eq!(v["pageSize"], 100);
        let n = if page < 3 { 100 } else { 50 };
        let page_ids = ids(&v);
        assert_eq!(page_ids.len(), n);
        seen.extend(page_ids);
    }
    assert_eq!(seen.len(), 250);
    // Over-large page sizes are clamped; the default is 10.
    let v = env.ok(Method::GET, "/files?pageSize=1000", None).await;
    assert_eq!(v["pageSize"], 100);
    let v = env.ok(Method::GET, "/files", None).await;
    assert_eq!(v["pageSize"], 10);
    assert_eq!(v["lastPage"], 25);
    assert_eq!(ids(&v).len(), 10);
    let v = env.ok(Method::GET, "/files?page=99", None).await;
    assert_eq!(ids(&v).len(), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_is_required() {
    let env = Env::new().await;
    let url = env.api("/folders");
    for req in [
        env.http.get(&url),
        env.http.get(&url).bearer_auth("wrong"),
        env.http.get(&url).header("Authorization", "Basic dDBr"),
    ] {
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["statusCode"], 401);
        assert!(v["message"].is_string());
    }
    let r = env.http.get(&url).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn upload_over_limit_is_413_and_leaves_nothing() {
    let env = Env::with(|c| c.max_upload_size = 1000).await;
    let (s, v) = env
        .call(
            Method::POST,
            "/files",
            Some(json!({"fileName": "big", "data": STANDARD.encode(vec![1u8; 200_000])})),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["statusCode"], 413);
    // Exactly at the limit is fine.
    env.upload("ok", None, &[2u8; 1000]).await;
    let blobs: Vec<_> = std::fs::read_dir(env._dir.path().join("blobs"))
        .unwrap()
        .collect();
    assert_eq!(
        blobs.len(),
        1,
        "temp file of the rejected upload left behind"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_urls_serve_ranges_and_expire() {
    let env = Env::new().await;
    let bytes = pseudo_random(300_001, 7);
    let f = env.upload("odd name/ü #1.bin", None, &bytes).await;
    let url = f["upload"]["fileUrl"].as_str().unwrap().to_string();
    assert!(url.starts_with(&format!("{}/cdn/", env.srv.base_url())));
    assert!(url.contains("Expires=") && url.contains("Signature=") && url.contains("Key-Pair-Id="));

    let r = env.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["accept-ranges"], "bytes");
    assert_eq!(r.headers()["content-length"], "300001");
    assert_eq!(sha(&r.bytes().await.unwrap()), sha(&bytes));

    for (range, start, end) in [
        ("bytes=1-4095", 1usize, 4095usize),
        ("bytes=4095-1000003", 4095, 300_000),
        ("bytes=300000-", 300_000, 300_000),
        ("bytes=-7", 300_001 - 7, 300_000),
        ("bytes=12345-12345", 12345, 12345),
    ] {
        let r = env
            .http
            .get(&url)
            .header("Range", range)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes {start}-{end}/300001").as_str()
        );
        assert_eq!(
            r.headers()["content-length"],
            (end - start + 1).to_string().as_str()
        );
        let body = r.bytes().await.unwrap();
        assert_eq!(sha(&body), sha(&bytes[start..=end]), "{range}");
    }
    let r = env
        .http
        .get(&url)
        .header("Range", "bytes=300001-")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.headers()["content-range"], "bytes */300001");

    // HEAD answers the headers without a body.
    let r = env.http.head(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-length"], "300001");

    // An altered signature, or no signature: 403 with the XML AccessDenied body.
    let sig_at = url.find("Signature=").unwrap() + "Signature=".len();
    let mut altered = url.clone();
    let c = if &altered[sig_at..sig_at + 1] == "A" {
        "B"
    } else {
        "A"
    };
    altered.replace_range(sig_at..sig_at + 1, c);
    let bare = url.split('?').next().unwrap().to_string();
    for bad in [altered, bare] {
        let r = env.http.get(&bad).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert_eq!(r.headers()["content-type"], "application/xml");
        let body = r.text().await.unwrap();
        assert!(body.contains("<Code>AccessDenied</Code>"), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn expired_url_is_403_and_get_file_refreshes_it() {
    let env = Env::with(|c| c.url_ttl = Duration::from_secs(1)).await;
    let f = env.upload("x.bin", None, b"payload").await;
    let url = f["upload"]["fileUrl"].as_str().unwrap().to_string();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = env.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body = r.text().await.unwrap();
    assert_eq!(
        body,
        r#"<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access denied</Message></Error>"#
    );
    let id = f["id"].as_str().unwrap();
    let fresh = env.ok(Method::GET, &format!("/files/{id}"), None).await;
    let url2 = fresh["data"]["upload"]["fileUrl"].as_str().unwrap();
    assert_ne!(url2, url);
    let r = env.http.get(url2).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(&r.bytes().await.unwrap()[..], b"payload");
}

#[tokio::test(flavor = "multi_thread")]
async fn ignore_range_serves_whole_body() {
    let env = Env::with(|c| c.ignore_range = true).await;
    let bytes = pseudo_random(10_000, 3);
    let f = env.upload("x.bin", None, &bytes).await;
    let url = f["upload"]["fileUrl"].as_str().unwrap();
    let r = env
        .http
        .get(url)
        .header("Range", "bytes=5-9")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(sha(&r.bytes().await.unwrap()), sha(&bytes));
}

#[tokio::test(flavor = "multi_thread")]
async fn stats_and_faults() {
    let env = Env::new().await;
    let f = env.upload("s.bin", None, &pseudo_random(100_000, 9)).await;
    let id = f["id"].as_str().unwrap().to_string();
    env.emulator(Method::DELETE, "stats", None).await;

    env.ok(Method::GET, "/files", None).await;
    env.ok(Method::GET, "/files", None).await;
    env.ok(Method::GET, &format!("/files/{id}"), None).await;
    let url = f["upload"]["fileUrl"].as_str().unwrap().to_string();
    env.http
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let _ = env.http.get(env.api("/files")).send().await.unwrap();
    let stats = env.emulator(Method::GET, "stats", None).await;
    assert_eq!(stats["total"], 5, "{stats}");
    assert_eq!(stats["byRoute"]["GET /api/v1/media-manager/files"], 3);
    assert_eq!(stats["byRoute"]["GET /api/v1/media-manager/files/{id}"], 1);
    assert_eq!(stats["byRoute"]["GET /cdn/{key}"], 1);
    assert_eq!(stats["byStatus"]["200"], 4);
    assert_eq!(stats["byStatus"]["401"], 1);

    // Two injected 503s, then normal service.
    env.emulator(
        Method::PUT,
        "faults",
        Some(json!({"errorRate": 1.0, "count": 2})),
    )
    .await;
    for _ in 0..2 {
        let (s, v) = env.call(Method::GET, "/folders", None).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(v["statusCode"], 503);
    }
    env.ok(Method::GET, "/folders", None).await;
    assert_eq!(env.emulator(Method::GET, "faults", None).await, json!({}));

    // 429 with Retry-After, limited to one route.
    env.emulator(
        Method::PUT,
        "faults",
        Some(json!({"rateLimitRate": 1.0, "retryAfterSecs": 2, "route": "GET /api/v1/media-manager/files/{id}"})),
    )
    .await;
    env.ok(Method::GET, "/files", None).await;
    let r = env
        .http
        .get(env.api(&format!("/files/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "2");
    env.emulator(Method::DELETE, "faults", None).await;
    env.ok(Method::GET, &format!("/files/{id}"), None).await;

    // A dropped connection: the body ends early with an error.
    env.emulator(
        Method::PUT,
        "faults",
        Some(json!({"dropRate": 1.0, "route": "GET /cdn/{key}", "count": 1})),
    )
    .await;
    let r = env.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.bytes().await.is_err(),
        "the body should have been cut off"
    );
    let r = env.http.get(&url).send().await.unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), 100_000);

    // Latency.
    env.emulator(
        Method::PUT,
        "faults",
        Some(json!({"latencyMs": 300, "count": 1})),
    )
    .await;
    let t = std::time::Instant::now();
    env.ok(Method::GET, "/folders", None).await;
    assert!(t.elapsed() >= Duration::from_millis(300));

    // Bad fault configs are refused.
    let r = env
        .http
        .put(format!("{}/_emulator/faults", env.srv.base_url()))
        .bearer_auth(TOKEN)
        .json(&json!({"errorRate": 2.0}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test(flavor = "multi_thread")]
async fn data_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ServerConfig::for_tests(dir.path().to_path_buf(), TOKEN);
    let srv = server::start(cfg.clone()).await.unwrap();
    let http = Client::new();
    let api = |srv: &ServerHandle, p: &str| format!("{}/api/v1/media-manager{p}", srv.base_url());
    let folder: Value = http
        .post(api(&srv, "/folders"))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "kept"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let file: Value = http
        .post(api(&srv, "/files"))
        .bearer_auth(TOKEN)
        .json(&json!({"fileName": "k.txt", "data": STANDARD.encode(b"still here"), "folderId": folder["data"]["id"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    srv.shutdown().await;

    let srv = server::start(cfg).await.unwrap();
    let id = file["data"]["id"].as_str().unwrap();
    let again: Value = http
        .get(api(&srv, &format!("/files/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["data"]["folderId"], folder["data"]["id"]);
    assert_eq!(again["data"]["createdAt"], file["data"]["createdAt"]);
    let url = again["data"]["upload"]["fileUrl"].as_str().unwrap();
    let bytes = http.get(url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(&bytes[..], b"still here");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn streamed_64_mib_upload_reads_back_equal() {
    let env = Env::new().await;
    let bytes = pseudo_random(64 << 20, 42);
    // Data in the middle of the object, sent in uneven chunks.
    let mut body = br#"{"fileName":"big.bin","title":"big \"one\"","data":""#.to_vec();
    body.extend_from_slice(STANDARD.encode(&bytes).as_bytes());
    body.extend_from_slice(br#"","mimeType":"application/octet-stream","sortOrder":1}"#);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        body.chunks(1_000_003).map(|c| Ok(c.to_vec())).collect();
    drop(body);
    let resp = env
        .http
        .post(env.api("/files"))
        .bearer_auth(TOKEN)
        .header("Content-Type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["data"]["upload"]["fileSize"], 64 << 20);
    assert_eq!(v["data"]["title"], "big \"one\"");
    let url = v["data"]["upload"]["fileUrl"].as_str().unwrap();
    let got = env
        .http
        .get(url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(sha(&got), sha(&bytes));
}

#[tokio::test(flavor = "multi_thread")]
async fn sample_library_is_seeded_once() {
    let env = Env::with(|c| c.seed_sample = true).await;
    let root = env.ok(Method::GET, "/folders?parentId=root", None).await;
    let names: Vec<&str> = root["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Welcome", "Photos", "Documents"]);
    let files = env.ok(Method::GET, "/files?pageSize=100", None).await;
    let files = files["data"].as_array().unwrap();
    let titles: Vec<&str> = files.iter().map(|f| f["title"].as_str().unwrap()).collect();
    assert!(titles.contains(&"AC/DC notes.txt"), "{titles:?}");
    assert_eq!(titles.iter().filter(|t| **t == "todo.txt").count(), 2);
    let total: u64 = files
        .iter()
        .map(|f| f["upload"]["fileSize"].as_u64().unwrap())
        .sum();
    assert!(total < 100 * 1024);
    let png = files
        .iter()
        .find(|f| f["title"] == "red-pixel.png")
        .unwrap();
    let bytes = env
        .http
        .get(png["upload"]["fileUrl"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");

    // The raw JSON keeps the documented field order.
    let raw = env
        .http
        .get(env.api(&format!("/files/{}", png["id"].as_str().unwrap())))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let at = |k: &str| raw.find(&format!("\"{k}\"")).unwrap();
    assert!(at("id") < at("uploadId") && at("uploadId") < at("folderId"));
    assert!(at("updatedAt") < at("upload") && at("fileName") < at("fileUrl"));
}

#[tokio::test(flavor = "multi_thread")]
async fn aborted_upload_leaves_no_temp_file() {
    use tokio::io::AsyncWriteExt as _;
    let env = Env::new().await;
    let mut sock = tokio::net::TcpStream::connect(env.srv.addr())
        .await
        .unwrap();
    let head = format!(
        "POST /api/v1/media-manager/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 10000000\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(br#"{"fileName":"cut.bin","data":""#)
        .await
        .unwrap();
    sock.write_all(STANDARD.encode(vec![5u8; 300_000]).as_bytes())
        .await
        .unwrap();
    sock.flush().await.unwrap();
    let blobs = env._dir.path().join("blobs");
    // The temp file exists while the upload is in progress...
    let mut seen = false;
    for _ in 0..100 {
        if std::fs::read_dir(&blobs).unwrap().count() == 1 {
            seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen, "no temp file during the upload");
    // ...and is gone once the client disappears.
    drop(sock);
    for _ in 0..100 {
        if std::fs::read_dir(&blobs).unwrap().count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("temp file of an aborted upload left behind");
}
