//! `mediafs probe`: asks a Media Manager service which shape of the API it speaks (envelope,
//! paging, filters, status codes, error bodies, signed URLs, rate-limit headers) so that a
//! user can tell us, and mediafs can be tested against, the real thing.
//!
//! Raw HTTP on purpose: the client (`api::http`) hides exactly what this wants to see.
//! Read-only unless `--write`; then everything happens inside one scratch folder that is
//! removed at the end, failure or not. Nothing printed holds the token or a signed URL.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use base64::Engine as _;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::{json, Value};

use crate::api::error::scrub;
use crate::api::http::API_PREFIX;

/// Ask a Media Manager service which shape of the API it speaks.
#[derive(clap::Args, Debug, Clone)]
pub struct ProbeArgs {
    /// Service root, e.g. https://apigw.klinkcx.com (with or without /api/v1/media-manager).
    #[arg(long, value_name = "URL", env = "MEDIAFS_API_URL")]
    pub api_url: String,

    /// File holding the bearer token (else the environment variable MEDIAFS_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,

    /// Also try writes (create, update, move, rename onto a duplicate name, delete) inside
    /// a scratch folder that is created for it and removed afterwards.
    #[arg(long)]
    pub write: bool,
}

/// What one probe found. `None`: could not tell (e.g. an empty library).
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Scheme, host and port only.
    pub service: String,
    /// Top-level keys of a list answer.
    pub list_keys: Vec<String>,
    /// Top-level keys of a single-object answer.
    pub object_keys: Vec<String>,
    /// Answers carry `success` and/or `requestId`.
    pub wrapped: Option<bool>,
    /// Paging fields present in a list answer (`total`, `page`, `pageSize`, `lastPage`).
    pub paging_fields: Vec<String>,
    /// A list answer without any paging field.
    pub bare_lists: Option<bool>,
    /// The `pageSize` asked for when measuring the largest page.
    pub page_size_asked: u64,
    /// The largest page the service served (its own `pageSize`, or the items of a capped
    /// page); `None` when every item fitted in one answer without a `pageSize`.
    pub largest_page_size: Option<u64>,
    /// `parentId` filter of Get Folders honoured.
    pub folder_filter_honoured: Option<bool>,
    /// `folderId` filter of Get Files honoured.
    pub file_filter_honoured: Option<bool>,
    /// Timestamps carry fractional seconds.
    pub fractional_seconds: Option<bool>,
    /// JSON type of `upload.fileSize`: "number" or "string".
    pub file_size_type: Option<String>,
    /// Status codes seen, per operation (`"GET /folders"` → codes).
    pub status_codes: BTreeMap<String, BTreeSet<u16>>,
    /// Keys of an error body (404), e.g. `["message", "statusCode"]`.
    pub error_keys: Vec<String>,
    /// Status of a call without a token.
    pub unauthorized_status: Option<u16>,
    /// Seconds until a fresh signed URL expires (its `Expires`), as seen from this machine.
    pub signed_url_lifetime_secs: Option<i64>,
    /// Status of a `Range: bytes=0-0` read of a signed URL (206: ranges work).
    pub range_status: Option<u16>,
    pub range_works: Option<bool>,
    /// Rate-limit related response headers seen (names only).
    pub rate_limit_headers: BTreeSet<String>,
    /// Results of `--write`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub write: Option<WriteReport>,
    /// Things that went wrong or could not be checked.
    pub notes: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteReport {
    /// Name of the scratch folder (at the library root).
    pub scratch_folder: String,
    pub create_folder_status: Option<u16>,
    pub create_file_status: Option<u16>,
    pub update_file_status: Option<u16>,
    pub delete_status: Option<u16>,
    /// Update File with a new `folderId` moved the file.
    pub file_move_honoured: Option<bool>,
    /// Update Folder with a new `parentId` moved the folder.
    pub folder_move_honoured: Option<bool>,
    /// Status of renaming a file onto the title of another file in the same folder.
    pub duplicate_rename_status: Option<u16>,
    /// Status of creating a file with a title already used in the folder.
    pub duplicate_create_status: Option<u16>,
    /// The service refuses duplicate names in a folder (409).
    pub unique_names: Option<bool>,
    /// Objects the probe created and could not remove (kind and id).
    pub leftovers: Vec<String>,
}

/// `mediafs probe`: prints the report; exit code 0, or 1 when the service could not be
/// probed at all.
pub fn run(args: ProbeArgs) -> i32 {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mediafs: {e}");
            return 1;
        }
    };
    let token = match read_token(&args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("mediafs: {e:#}");
            return 1;
        }
    };
    let result = rt.block_on(probe(&args.api_url, &token, args.write));
    match result {
        Ok(report) => {
            let text = if args.json {
                serde_json::to_string_pretty(&report).unwrap_or_default()
            } else {
                render(&report)
            };
            // A closed pipe (`| head`) is not an error worth a panic.
            use std::io::Write as _;
            let _ = writeln!(std::io::stdout().lock(), "{}", clean(&text, &token));
            0
        }
        Err(e) => {
            eprintln!("mediafs: {}", clean(&format!("{e:#}"), &token));
            1
        }
    }
}

fn read_token(args: &ProbeArgs) -> anyhow::Result<String> {
    let t = match &args.token_file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("reading token file {}", path.display()))?,
        None => std::env::var("MEDIAFS_TOKEN").unwrap_or_default(),
    };
    let t = t.trim().to_string();
    if t.is_empty() {
        bail!("no API token: pass --token-file FILE or set MEDIAFS_TOKEN");
    }
    Ok(t)
}

/// Last line of defence: no token, no query string of a URL.
fn clean(text: &str, token: &str) -> String {
    let out = scrub(text);
    if token.len() >= 4 {
        out.replace(token, "<redacted>")
    } else {
        out
    }
}

/// One answer, as far as the probe cares.
struct Answer {
    status: u16,
    json: Option<Value>,
}

struct Prober {
    http: reqwest::Client,
    base: String,
    auth: String,
    report: Report,
}

/// Runs the read-only checks, and the write checks when `write`.
pub async fn probe(api_url: &str, token: &str, write: bool) -> anyhow::Result<Report> {
    let trimmed = api_url.trim().trim_end_matches('/');
    let base = if trimmed.ends_with(API_PREFIX) {
        trimmed.to_string()
    } else {
        format!("{trimmed}{API_PREFIX}")
    };
    let parsed = reqwest::Url::parse(&base).context("invalid --api-url")?;
    let service = match (parsed.host_str(), parsed.port()) {
        (Some(h), Some(p)) => format!("{}://{h}:{p}", parsed.scheme()),
        (Some(h), None) => format!("{}://{h}", parsed.scheme()),
        _ => bail!("invalid --api-url: need http(s)://host"),
    };
    let http = reqwest::Client::builder()
        .user_agent(concat!("mediafs-probe/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()
        .context("building the HTTP client")?;
    let mut p = Prober {
        http,
        base,
        auth: format!("Bearer {token}"),
        report: Report {
            service,
            page_size_asked: 1000,
            ..Report::default()
        },
    };
    p.read_checks().await?;
    if write {
        p.write_checks().await;
    }
    Ok(p.report)
}

fn keys(v: &Value) -> Vec<String> {
    v.as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

fn items(v: &Value) -> Vec<Value> {
    v.get("data")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// A count that may be a number or a string.
fn count_of(v: &Value, key: &str) -> Option<u64> {
    match v.get(key)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Prober {
    /// One call; records the status and rate-limit headers. `label` is the operation with
    /// ids left out, e.g. `GET /files/{id}`.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        label: &str,
        body: Option<Value>,
        with_token: bool,
    ) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .http
            .request(method, &url)
            .header("Accept", "application/json");
        if with_token {
            req = req.header("Authorization", &self.auth);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{label}: {}", reason(e)))?;
        let status = resp.status().as_u16();
        self.note_headers(resp.headers());
        self.report
            .status_codes
            .entry(label.to_string())
            .or_default()
            .insert(status);
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| anyhow::anyhow!("{label}: reading the answer: {}", reason(e)))?;
        let json = serde_json::from_slice::<Value>(&bytes).ok();
        Ok(Answer { status, json })
    }

    fn note_headers(&mut self, headers: &HeaderMap) {
        for name in headers.keys() {
            let n = name.as_str();
            if n.contains("ratelimit") || n.contains("rate-limit") || n == "retry-after" {
                self.report.rate_limit_headers.insert(n.to_string());
            }
        }
    }

    fn note(&mut self, text: impl Into<String>) {
        self.report.notes.push(text.into());
    }

    fn see_object(&mut self, obj: &Value) {
        for key in ["createdAt", "updatedAt"] {
            if let Some(ts) = str_of(obj, key) {
                let frac = ts.contains('.');
                let r = &mut self.report.fractional_seconds;
                *r = Some(r.unwrap_or(false) || frac);
            }
        }
        if let Some(size) = obj.get("upload").and_then(|u| u.get("fileSize")) {
            let t = match size {
                Value::Number(_) => "number",
                Value::String(_) => "string",
                _ => "other",
            };
            self.report
                .file_size_type
                .get_or_insert_with(|| t.to_string());
        }
    }

    async fn read_checks(&mut self) -> anyhow::Result<()> {
        // Without a token: the status and the error body of a refusal.
        let anon = self
            .call(
                Method::GET,
                "/folders?page=1&pageSize=1",
                "GET /folders",
                None,
                false,
            )
            .await?;
        self.report.unauthorized_status = Some(anon.status);

        // The whole library in as few pages as the service allows.
        let asked = self.report.page_size_asked;
        let folders = self
            .call(
                Method::GET,
                &format!("/folders?page=1&pageSize={asked}"),
                "GET /folders",
                None,
                true,
            )
            .await?;
        if folders.status == 401 || folders.status == 403 {
            bail!(
                "the service refused the token (HTTP {}): check --token-file",
                folders.status
            );
        }
        let Some(fv) = folders.json.filter(|_| folders.status < 300) else {
            bail!(
                "Get Folders answered HTTP {} without a JSON list",
                folders.status
            );
        };
        let files = self
            .call(
                Method::GET,
                &format!("/files?page=1&pageSize={asked}"),
                "GET /files",
                None,
                true,
            )
            .await?;
        let gv = files.json.unwrap_or(Value::Null);
        self.report.list_keys = keys(&gv);
        let paging: Vec<String> = ["total", "page", "pageSize", "lastPage"]
            .into_iter()
            .filter(|k| gv.get(*k).is_some())
            .map(str::to_string)
            .collect();
        self.report.bare_lists = Some(paging.is_empty());
        self.report.paging_fields = paging;
        self.report.wrapped = Some(gv.get("success").is_some() || gv.get("requestId").is_some());
        let all_files = items(&gv);
        let all_folders = items(&fv);
        let served = all_files.len() as u64;
        self.report.largest_page_size = match (count_of(&gv, "pageSize"), count_of(&gv, "total")) {
            // A service may echo the pageSize asked for and serve fewer: the items served
            // then tell the real size.
            (Some(reported), Some(total)) if served > 0 && served < reported.min(total) => {
                Some(served)
            }
            (Some(reported), _) => Some(reported.min(asked)),
            (None, Some(total)) if total > served => Some(served),
            _ => None,
        };
        for f in all_files.iter().chain(all_folders.iter()) {
            self.see_object(f);
        }

        // Filters: ask for the children of one folder; anything else in the answer means
        // the filter was ignored.
        self.check_filters(&all_folders).await?;

        // Error body: a folder that cannot exist.
        let missing = self
            .call(
                Method::GET,
                "/folders/00000000-0000-0000-0000-000000000000",
                "GET /folders/{id}",
                None,
                true,
            )
            .await?;
        if missing.status < 300 {
            self.note("Get Folder By ID of an id that cannot exist did not fail");
        }
        self.report.error_keys = missing.json.as_ref().map(keys).unwrap_or_default();

        // One file by id: the object envelope and a fresh signed URL.
        match all_files
            .first()
            .and_then(|f| str_of(f, "id"))
            .map(str::to_string)
        {
            Some(id) => self.check_file(&id).await?,
            None => self.note("the library holds no file: signed URLs not checked (try --write)"),
        }
        Ok(())
    }

    async fn check_filters(&mut self, folders: &[Value]) -> anyhow::Result<()> {
        let Some(folder) = folders
            .iter()
            .find_map(|f| str_of(f, "id"))
            .map(str::to_string)
        else {
            self.note("the library holds no folder: filters not checked (try --write)");
            return Ok(());
        };
        let id = urlencode(&folder);
        let kids = self
            .call(
                Method::GET,
                &format!("/folders?parentId={id}&page=1&pageSize=100"),
                "GET /folders",
                None,
                true,
            )
            .await?;
        if let Some(v) = kids.json.filter(|_| kids.status < 300) {
            let foreign = items(&v)
                .iter()
                .any(|f| str_of(f, "parentId") != Some(folder.as_str()));
            self.report.folder_filter_honoured = Some(!foreign);
        }
        let files = self
            .call(
                Method::GET,
                &format!("/files?folderId={id}&page=1&pageSize=100"),
                "GET /files",
                None,
                true,
            )
            .await?;
        if let Some(v) = files.json.filter(|_| files.status < 300) {
            let foreign = items(&v)
                .iter()
                .any(|f| str_of(f, "folderId") != Some(folder.as_str()));
            self.report.file_filter_honoured = Some(!foreign);
        }
        Ok(())
    }

    async fn check_file(&mut self, id: &str) -> anyhow::Result<()> {
        let a = self
            .call(
                Method::GET,
                &format!("/files/{}", urlencode(id)),
                "GET /files/{id}",
                None,
                true,
            )
            .await?;
        let Some(v) = a.json.filter(|_| a.status < 300) else {
            self.note(format!("Get File By ID answered HTTP {}", a.status));
            return Ok(());
        };
        self.report.object_keys = keys(&v);
        let obj = v.get("data").cloned().unwrap_or(Value::Null);
        self.see_object(&obj);
        let Some(url) = obj
            .get("upload")
            .and_then(|u| str_of(u, "fileUrl"))
            .map(str::to_string)
        else {
            self.note("the file has no upload.fileUrl");
            return Ok(());
        };
        if let Ok(parsed) = reqwest::Url::parse(&url) {
            let expires = parsed
                .query_pairs()
                .find(|(k, _)| k.eq_ignore_ascii_case("Expires"))
                .and_then(|(_, v)| v.parse::<i64>().ok());
            self.report.signed_url_lifetime_secs = expires.map(|e| e - now_secs());
        }
        // No Authorization header: the signature is the credential.
        match self
            .http
            .get(&url)
            .header("Range", "bytes=0-0")
            .send()
            .await
        {
            Ok(resp) => {
                let s = resp.status();
                self.note_headers(resp.headers());
                self.report.range_status = Some(s.as_u16());
                self.report.range_works = Some(s == StatusCode::PARTIAL_CONTENT);
            }
            Err(e) => self.note(format!("reading the signed URL failed: {}", reason(e))),
        }
        Ok(())
    }

    // ------------------------------------------------------------ --write

    async fn write_checks(&mut self) {
        let name = format!("mediafs-probe-{}", uuid::Uuid::new_v4().simple());
        let mut w = WriteReport {
            scratch_folder: name.clone(),
            ..WriteReport::default()
        };
        let mut created = Created::default();
        if let Err(e) = self.write_steps(&name, &mut w, &mut created).await {
            self.note(format!("--write stopped: {e:#}"));
        }
        w.leftovers = self.clean_up(&created).await;
        self.report.write = Some(w);
    }

    async fn create_folder(
        &mut self,
        name: &str,
        parent: Option<&str>,
        created: &mut Created,
    ) -> anyhow::Result<(u16, String)> {
        let a = self
            .call(
                Method::POST,
                "/folders",
                "POST /folders",
                Some(json!({"name": name, "parentId": parent})),
                true,
            )
            .await?;
        let id = a
            .json
            .as_ref()
            .and_then(|v| v.get("data"))
            .and_then(|d| str_of(d, "id"))
            .map(str::to_string);
        match id {
            Some(id) if a.status < 300 => {
                created.folders.push(id.clone());
                Ok((a.status, id))
            }
            _ => bail!("Create Folder answered HTTP {}", a.status),
        }
    }

    /// Create File; `Ok(None)` when refused (status recorded by the caller).
    async fn create_file(
        &mut self,
        title: &str,
        folder: &str,
        created: &mut Created,
    ) -> anyhow::Result<(u16, Option<String>)> {
        let data = base64::engine::general_purpose::STANDARD.encode(b"mediafs probe\n");
        let a = self
            .call(
                Method::POST,
                "/files",
                "POST /files",
                Some(json!({
                    "data": data,
                    "fileName": title,
                    "mimeType": "text/plain",
                    "title": title,
                    "folderId": folder,
                })),
                true,
            )
            .await?;
        let id = a
            .json
            .as_ref()
            .and_then(|v| v.get("data"))
            .and_then(|d| str_of(d, "id"))
            .map(str::to_string);
        if let Some(id) = &id {
            created.files.push(id.clone());
        }
        Ok((a.status, id.filter(|_| a.status < 300)))
    }

    async fn get_data(&mut self, path: &str, label: &str) -> anyhow::Result<Value> {
        let a = self.call(Method::GET, path, label, None, true).await?;
        match a.json.and_then(|v| v.get("data").cloned()) {
            Some(d) if a.status < 300 => Ok(d),
            _ => bail!("{label} answered HTTP {}", a.status),
        }
    }

    async fn write_steps(
        &mut self,
        name: &str,
        w: &mut WriteReport,
        created: &mut Created,
    ) -> anyhow::Result<()> {
        let (status, scratch) = self.create_folder(name, None, created).await?;
        w.create_folder_status = Some(status);
        let (_, a) = self.create_folder("a", Some(&scratch), created).await?;
        let (_, b) = self.create_folder("b", Some(&scratch), created).await?;
        let (_, c) = self.create_folder("c", Some(&a), created).await?;

        let (status, file) = self.create_file("probe.txt", &a, created).await?;
        w.create_file_status = Some(status);
        let file = file.with_context(|| format!("Create File answered HTTP {status}"))?;
        let f = self
            .get_data(&format!("/files/{}", urlencode(&file)), "GET /files/{id}")
            .await?;
        self.see_object(&f);

        // Update: a new title.
        let up = self
            .call(
                Method::PATCH,
                &format!("/files/{}", urlencode(&file)),
                "PATCH /files/{id}",
                Some(json!({"title": "probe-renamed.txt"})),
                true,
            )
            .await?;
        w.update_file_status = Some(up.status);

        // Moves: a file from a to b, a folder from a to b; read back to see where they are.
        self.call(
            Method::PATCH,
            &format!("/files/{}", urlencode(&file)),
            "PATCH /files/{id}",
            Some(json!({"folderId": b})),
            true,
        )
        .await?;
        let f = self
            .get_data(&format!("/files/{}", urlencode(&file)), "GET /files/{id}")
            .await?;
        w.file_move_honoured = Some(str_of(&f, "folderId") == Some(b.as_str()));
        self.call(
            Method::PATCH,
            &format!("/folders/{}", urlencode(&c)),
            "PATCH /folders/{id}",
            Some(json!({"parentId": b})),
            true,
        )
        .await?;
        let d = self
            .get_data(&format!("/folders/{}", urlencode(&c)), "GET /folders/{id}")
            .await?;
        w.folder_move_honoured = Some(str_of(&d, "parentId") == Some(b.as_str()));

        // Duplicate names, in the scratch folder itself.
        let (_, first) = self.create_file("dup.txt", &scratch, created).await?;
        first.context("Create File of dup.txt failed")?;
        let (_, other) = self.create_file("other.txt", &scratch, created).await?;
        let other = other.context("Create File of other.txt failed")?;
        let rename = self
            .call(
                Method::PATCH,
                &format!("/files/{}", urlencode(&other)),
                "PATCH /files/{id}",
                Some(json!({"title": "dup.txt"})),
                true,
            )
            .await?;
        w.duplicate_rename_status = Some(rename.status);
        let (status, _) = self.create_file("dup.txt", &scratch, created).await?;
        w.duplicate_create_status = Some(status);
        w.unique_names = Some(rename.status == 409 || status == 409);

        // Delete: the first file (the clean-up deletes the rest).
        let del = self
            .call(
                Method::DELETE,
                &format!("/files/{}", urlencode(&file)),
                "DELETE /files/{id}",
                None,
                true,
            )
            .await?;
        w.delete_status = Some(del.status);
        if del.status < 300 {
            created.files.retain(|f| f != &file);
        }
        Ok(())
    }

    /// Deletes what the probe created (files first, folders deepest first); returns what
    /// is still there.
    async fn clean_up(&mut self, created: &Created) -> Vec<String> {
        for id in &created.files {
            let path = format!("/files/{}", urlencode(id));
            let _ = self
                .call(Method::DELETE, &path, "DELETE /files/{id}", None, true)
                .await;
        }
        // Created parents first, so the reverse order deletes children first (a folder
        // that did not move stays under its parent, which is deleted later too).
        for id in created.folders.iter().rev() {
            let path = format!("/folders/{}", urlencode(id));
            let _ = self
                .call(Method::DELETE, &path, "DELETE /folders/{id}", None, true)
                .await;
        }
        let mut left = Vec::new();
        for (kind, ids) in [("file", &created.files), ("folder", &created.folders)] {
            for id in ids {
                let path = format!("/{kind}s/{}", urlencode(id));
                let label = format!("GET /{kind}s/{{id}}");
                match self.call(Method::GET, &path, &label, None, true).await {
                    Ok(a) if a.status == 404 => {}
                    _ => left.push(format!("{kind} {id}")),
                }
            }
        }
        left
    }
}

/// What `--write` created, for the clean-up.
#[derive(Default)]
struct Created {
    files: Vec<String>,
    folders: Vec<String>,
}

/// Percent-encodes an id for a path or query (ids are opaque).
fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "unknown".to_string(), |v| v.to_string())
}

/// The human-readable report.
pub fn render(r: &Report) -> String {
    let mut out = Vec::new();
    out.push(format!("service:               {}", r.service));
    out.push(format!("list answer keys:      {}", r.list_keys.join(", ")));
    out.push(format!(
        "object answer keys:    {}",
        r.object_keys.join(", ")
    ));
    out.push(format!(
        "wrapped (success/requestId): {}",
        yes_no(r.wrapped)
    ));
    out.push(format!(
        "paging fields:         {}",
        if r.paging_fields.is_empty() {
            "none (bare list)".to_string()
        } else {
            r.paging_fields.join(", ")
        }
    ));
    out.push(format!(
        "largest page size:     {} (asked {})",
        opt(r.largest_page_size),
        r.page_size_asked
    ));
    out.push(format!(
        "filters honoured:      folders {}, files {}",
        yes_no(r.folder_filter_honoured),
        yes_no(r.file_filter_honoured)
    ));
    out.push(format!(
        "timestamps:            fractional seconds {}; fileSize as {}",
        yes_no(r.fractional_seconds),
        opt(r.file_size_type.as_deref())
    ));
    out.push(format!(
        "error body keys:       {}",
        r.error_keys.join(", ")
    ));
    out.push(format!(
        "without a token:       HTTP {}",
        opt(r.unauthorized_status)
    ));
    out.push(format!(
        "signed URL lifetime:   {} s; Range: HTTP {} ({})",
        opt(r.signed_url_lifetime_secs),
        opt(r.range_status),
        if r.range_works == Some(true) {
            "ranges work"
        } else {
            "no ranges"
        }
    ));
    out.push(format!(
        "rate-limit headers:    {}",
        if r.rate_limit_headers.is_empty() {
            "none seen".to_string()
        } else {
            r.rate_limit_headers
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        }
    ));
    out.push("status codes:".to_string());
    for (op, codes) in &r.status_codes {
        let codes: Vec<_> = codes.iter().map(u16::to_string).collect();
        out.push(format!("  {op:<22} {}", codes.join(", ")));
    }
    if let Some(w) = &r.write {
        out.push(format!("writes (scratch folder {}):", w.scratch_folder));
        out.push(format!(
            "  create folder/file:  HTTP {} / {}; update HTTP {}; delete HTTP {}",
            opt(w.create_folder_status),
            opt(w.create_file_status),
            opt(w.update_file_status),
            opt(w.delete_status)
        ));
        out.push(format!(
            "  moves honoured:      file {}, folder {}",
            yes_no(w.file_move_honoured),
            yes_no(w.folder_move_honoured)
        ));
        out.push(format!(
            "  unique names:        {} (rename onto a name: HTTP {}, create a namesake: HTTP {})",
            yes_no(w.unique_names),
            opt(w.duplicate_rename_status),
            opt(w.duplicate_create_status)
        ));
        out.push(format!(
            "  left behind:         {}",
            if w.leftovers.is_empty() {
                "nothing".to_string()
            } else {
                w.leftovers.join(", ")
            }
        ));
    }
    for n in &r.notes {
        out.push(format!("note: {n}"));
    }
    out.join("\n")
}

/// A request's failure with its causes ("error sending request: client error (Connect):
/// tcp connect error: Connection refused"), never its URL: a signed URL must not be shown.
fn reason(e: reqwest::Error) -> String {
    crate::api::http::describe(&e.without_url())
}
