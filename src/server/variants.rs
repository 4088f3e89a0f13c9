//! API variants: other plausible shapes of the unpublished parts of the Media Manager API,
//! switchable with `mediafs serve --api-variant NAME[,NAME…]` so the client can be tested
//! against a service that does not behave exactly like our assumption (docs/API-VARIANTS.md).
//!
//! Most variants are request/response rewrites in one middleware in front of the API
//! routes ([`layer`]); `unique-names` needs the database and is checked by the handlers
//! through [`check_folder_name`] / [`check_file_title`], and `bare-lists` lifts the page
//! size cap through [`Variants::max_page_size`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::Response;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::{json, Map, Value};

use super::error::{HttpError, HttpResult};
use super::AppState;

/// One way the real service may differ from the emulator's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    /// Lists are `{"data": [...]}` with every item, no paging fields.
    BareLists,
    /// Every answer carries `requestId` and `success`; errors are
    /// `{"success": false, "message", "errors": [...]}`.
    Wrapped,
    /// `parentId`/`folderId` filters are ignored: lists hold the whole library.
    IgnoreFilters,
    /// Create Folder and Create File answer 201.
    Created201,
    /// Delete Folder and Delete File answer 204 with no body.
    Delete204,
    /// `pageSize` is capped at 50 without notice and `lastPage` is absent.
    PageSize50,
    /// Like `page-size-50`, and the answer's `pageSize` echoes the one asked for.
    PageSize50Echo,
    /// Update File/Folder ignore `folderId`/`parentId` (200, object not moved).
    NoMove,
    /// Create and rename answer 409 when the name is taken in that folder.
    UniqueNames,
    /// Like `unique-names`, and Create File also answers 409 when a file of that folder
    /// has the same `fileName`.
    UniqueFileNames,
    /// Timestamps without fractional seconds, `fileSize` as a string.
    StrictTimestamps,
}

impl Variant {
    pub const ALL: [Variant; 11] = [
        Variant::BareLists,
        Variant::Wrapped,
        Variant::IgnoreFilters,
        Variant::Created201,
        Variant::Delete204,
        Variant::PageSize50,
        Variant::PageSize50Echo,
        Variant::NoMove,
        Variant::UniqueNames,
        Variant::UniqueFileNames,
        Variant::StrictTimestamps,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Variant::BareLists => "bare-lists",
            Variant::Wrapped => "wrapped",
            Variant::IgnoreFilters => "ignore-filters",
            Variant::Created201 => "created-201",
            Variant::Delete204 => "delete-204",
            Variant::PageSize50 => "page-size-50",
            Variant::PageSize50Echo => "page-size-50-echo",
            Variant::NoMove => "no-move",
            Variant::UniqueNames => "unique-names",
            Variant::UniqueFileNames => "unique-file-names",
            Variant::StrictTimestamps => "strict-timestamps",
        }
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl FromStr for Variant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        Variant::ALL
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Variant::ALL.iter().map(|v| v.name()).collect();
                format!("unknown API variant {s:?} (known: {})", names.join(", "))
            })
    }
}

/// A set of variants; empty is the default shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Variants(u16);

/// With `bare-lists`, one answer holds the whole list: effectively no page size cap.
const BARE_LIST_PAGE: u64 = 1_000_000;
/// The silent cap of `page-size-50`.
const CAPPED_PAGE: u64 = 50;

impl Variants {
    pub fn none() -> Self {
        Variants(0)
    }

    pub fn with(mut self, v: Variant) -> Self {
        self.0 |= v.bit();
        self
    }

    pub fn has(self, v: Variant) -> bool {
        self.0 & v.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Variant> {
        Variant::ALL.into_iter().filter(move |v| self.has(*v))
    }

    /// Parses `a,b,c` (names from [`Variant::name`]); each list item may itself be a
    /// comma-separated list.
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<Self, String> {
        let mut out = Variants::none();
        for item in items {
            for name in item.as_ref().split(',').filter(|n| !n.trim().is_empty()) {
                out = out.with(name.parse()?);
            }
        }
        Ok(out)
    }

    /// The largest page the list handlers serve, given the default cap `default`.
    pub(crate) fn max_page_size(self, default: u64) -> u64 {
        if self.has(Variant::BareLists) {
            BARE_LIST_PAGE
        } else if self.has(Variant::PageSize50) || self.has(Variant::PageSize50Echo) {
            default.min(CAPPED_PAGE)
        } else {
            default
        }
    }
}

impl fmt::Display for Variants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<_> = self.iter().map(Variant::name).collect();
        if names.is_empty() {
            f.write_str("default")
        } else {
            f.write_str(&names.join(","))
        }
    }
}

// ---------------------------------------------------------------- unique-names

/// `unique-names`: 409 when another folder (not `except`) named `name` sits in `parent`.
pub(crate) fn check_folder_name(
    c: &Connection,
    v: Variants,
    name: &str,
    parent: Option<&str>,
    except: Option<&str>,
) -> HttpResult<()> {
    check_taken(
        c,
        v,
        "SELECT id FROM folders WHERE name = ?1 AND parent_id IS ?2 AND id IS NOT ?3 LIMIT 1",
        (name, parent, except),
        "a folder with this name already exists in this folder",
    )
}

/// `unique-names`: 409 when another file (not `except`) titled `title` sits in `folder`.
pub(crate) fn check_file_title(
    c: &Connection,
    v: Variants,
    title: &str,
    folder: Option<&str>,
    except: Option<&str>,
) -> HttpResult<()> {
    check_taken(
        c,
        v,
        "SELECT id FROM files WHERE title = ?1 AND folder_id IS ?2 AND id IS NOT ?3 LIMIT 1",
        (title, folder, except),
        "a file with this name already exists in this folder",
    )
}

/// `unique-file-names`: 409 when a file of `folder` already has `file_name`.
pub(crate) fn check_file_name(
    c: &Connection,
    v: Variants,
    file_name: &str,
    folder: Option<&str>,
) -> HttpResult<()> {
    if !v.has(Variant::UniqueFileNames) {
        return Ok(());
    }
    check_taken(
        c,
        v,
        "SELECT id FROM files WHERE file_name = ?1 AND folder_id IS ?2 AND id IS NOT ?3 LIMIT 1",
        (file_name, folder, None),
        "a file with this file name already exists in this folder",
    )
}

/// The one check behind all three: `sql` finds another object holding the name.
fn check_taken(
    c: &Connection,
    v: Variants,
    sql: &str,
    (name, parent, except): (&str, Option<&str>, Option<&str>),
    conflict: &str,
) -> HttpResult<()> {
    if !(v.has(Variant::UniqueNames) || v.has(Variant::UniqueFileNames)) {
        return Ok(());
    }
    let taken: Option<String> = c
        .query_row(sql, params![name, parent, except], |r| r.get(0))
        .optional()?;
    match taken {
        Some(_) => Err(HttpError::conflict(conflict)),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------- the middleware

/// Largest JSON body the middleware rewrites (API answers and PATCH bodies are small;
/// Create File bodies are never buffered).
const REWRITE_LIMIT: usize = 64 << 20;

/// Rewrites requests and answers of the API routes according to the configured variants.
pub(crate) async fn layer(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let v = st.variants;
    if v.is_empty() {
        return next.run(req).await;
    }
    let method = req.method().clone();
    let path = req.uri().path();
    let is_list = method == Method::GET && (path.ends_with("/folders") || path.ends_with("/files"));
    let mut req = req;
    // The pageSize asked for, echoed by `page-size-50-echo`.
    let asked = is_list.then(|| asked_page_size(req.uri())).flatten();
    if is_list {
        rewrite_list_query(&mut req, v);
    }
    if method == Method::PATCH && v.has(Variant::NoMove) {
        req = match strip_move(req).await {
            Ok(r) => r,
            Err(resp) => return resp,
        };
    }
    let resp = next.run(req).await;
    reshape(resp, v, &method, is_list, asked).await
}

fn asked_page_size(uri: &Uri) -> Option<u64> {
    uri.query()?
        .split('&')
        .find_map(|p| p.strip_prefix("pageSize="))
        .and_then(|n| n.parse().ok())
}

/// `ignore-filters` drops the parent filter, `bare-lists` asks for everything in one
/// answer, `page-size-50` caps `pageSize`.
fn rewrite_list_query(req: &mut Request, v: Variants) {
    let query = req.uri().query().unwrap_or("");
    let mut pairs: Vec<String> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let key = pair.split('=').next().unwrap_or("");
        let drop = match key {
            "parentId" | "folderId" => v.has(Variant::IgnoreFilters),
            "page" | "pageSize" => v.has(Variant::BareLists),
            _ => false,
        };
        if !drop {
            pairs.push(pair.to_string());
        }
    }
    if v.has(Variant::BareLists) {
        pairs.push(format!("pageSize={BARE_LIST_PAGE}"));
    }
    let path = req.uri().path().to_string();
    let new = if pairs.is_empty() {
        path
    } else {
        format!("{path}?{}", pairs.join("&"))
    };
    if let Ok(uri) = new.parse::<Uri>() {
        *req.uri_mut() = uri;
    }
}

/// `no-move`: the PATCH body loses `folderId`/`parentId` before the handler sees it.
async fn strip_move(req: Request) -> Result<Request, Response> {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, REWRITE_LIMIT)
        .await
        .map_err(|e| error_body(StatusCode::BAD_REQUEST, &format!("reading the body: {e}")))?;
    let bytes = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(mut m)) => {
            m.remove("folderId");
            m.remove("parentId");
            Bytes::from(serde_json::to_vec(&Value::Object(m)).unwrap_or_default())
        }
        // Not an object: the handler rejects it as usual.
        _ => bytes,
    };
    let mut parts = parts;
    parts.headers.remove(header::CONTENT_LENGTH);
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

fn error_body(status: StatusCode, message: &str) -> Response {
    super::error::error_response(status, message)
}

/// Rewrites an API answer: envelope, status code, timestamps.
async fn reshape(
    resp: Response,
    v: Variants,
    method: &Method,
    is_list: bool,
    asked: Option<u64>,
) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|t| t.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if !is_json {
        return resp;
    }
    if status.is_success() && *method == Method::DELETE && v.has(Variant::Delete204) {
        let mut r = Response::new(Body::empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        return r;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = match axum::body::to_bytes(body, REWRITE_LIMIT).await {
        Ok(b) => b,
        Err(e) => return error_body(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let Ok(Value::Object(mut m)) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    if status.is_success() {
        if is_list && v.has(Variant::BareLists) {
            m.retain(|k, _| k == "data");
        }
        if is_list && (v.has(Variant::PageSize50) || v.has(Variant::PageSize50Echo)) {
            m.remove("lastPage");
        }
        if let (true, true, Some(n)) = (is_list, v.has(Variant::PageSize50Echo), asked) {
            m.insert("pageSize".into(), n.into());
        }
        if v.has(Variant::StrictTimestamps) {
            for value in m.values_mut() {
                strict(value);
            }
        }
        if v.has(Variant::Wrapped) {
            m = wrap(m, true);
        }
        if *method == Method::POST && v.has(Variant::Created201) && status == StatusCode::OK {
            parts.status = StatusCode::CREATED;
        }
    } else if v.has(Variant::Wrapped) {
        let message = m
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or("error")
            .to_string();
        let mut e = Map::new();
        e.insert("message".into(), Value::String(message.clone()));
        e.insert("errors".into(), json!([{ "message": message }]));
        m = wrap(e, false);
    }
    let out = serde_json::to_vec(&Value::Object(m)).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(out))
}

/// `{"success", "requestId", …m}`.
fn wrap(m: Map<String, Value>, success: bool) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("success".into(), Value::Bool(success));
    out.insert(
        "requestId".into(),
        Value::String(uuid::Uuid::new_v4().to_string()),
    );
    out.extend(m);
    out
}

/// `strict-timestamps`: `createdAt`/`updatedAt` lose their fraction, `fileSize` becomes a
/// string, at any depth.
fn strict(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(strict),
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                match (k.as_str(), &*v) {
                    ("createdAt" | "updatedAt", Value::String(s)) => {
                        *v = Value::String(drop_fraction(s));
                    }
                    ("fileSize", Value::Number(n)) => *v = Value::String(n.to_string()),
                    _ => strict(v),
                }
            }
        }
        _ => {}
    }
}

/// `2026-02-20T11:29:59.123456Z` → `2026-02-20T11:29:59Z`.
fn drop_fraction(ts: &str) -> String {
    match ts.find('.') {
        Some(dot) => {
            let rest = &ts[dot + 1..];
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            format!("{}{}", &ts[..dot], &rest[digits..])
        }
        None => ts.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_variant_lists() {
        let v = Variants::parse(&["bare-lists,wrapped", " no-move "]).unwrap();
        assert!(v.has(Variant::BareLists) && v.has(Variant::Wrapped) && v.has(Variant::NoMove));
        assert!(!v.has(Variant::UniqueNames));
        assert_eq!(v.to_string(), "bare-lists,wrapped,no-move");
        assert!(Variants::parse(&["nope"]).is_err());
        assert!(Variants::parse::<&str>(&[]).unwrap().is_empty());
        for x in Variant::ALL {
            assert_eq!(x.name().parse::<Variant>(), Ok(x));
        }
    }

    #[test]
    fn strict_rewrites_timestamps_and_sizes() {
        let mut v = json!({"data": [{"createdAt": "2026-02-20T11:29:59.000123Z",
            "upload": {"fileSize": 70, "fileName": "a.1"}}]});
        strict(&mut v);
        assert_eq!(v["data"][0]["createdAt"], "2026-02-20T11:29:59Z");
        assert_eq!(v["data"][0]["upload"]["fileSize"], "70");
        assert_eq!(v["data"][0]["upload"]["fileName"], "a.1");
        assert_eq!(
            drop_fraction("2026-02-20T11:29:59Z"),
            "2026-02-20T11:29:59Z"
        );
    }

    #[test]
    fn page_cap_per_variant() {
        assert_eq!(Variants::none().max_page_size(100), 100);
        let capped = Variants::none().with(Variant::PageSize50);
        assert_eq!(capped.max_page_size(100), 50);
        let echo = Variants::none().with(Variant::PageSize50Echo);
        assert_eq!(echo.max_page_size(100), 50);
        let bare = Variants::none().with(Variant::BareLists);
        assert!(bare.max_page_size(100) > 100_000);
    }
}
