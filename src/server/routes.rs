//! The router and the ten API handlers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt as _;
use serde::Serialize;
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt as _;

use super::blobs::TempGuard;
use super::db::{self, FilePatch, FileRow, FolderPatch, FolderRow, ParentFilter};
use super::error::{error_response, HttpError, HttpResult};
use super::upload::{UploadParseError, UploadParser};
use super::{cdn, faults, fields, variants, AppState};

const DEFAULT_PAGE_SIZE: u64 = 10;
const MAX_PAGE_SIZE: u64 = 100;

type St = State<Arc<AppState>>;

pub fn router(st: Arc<AppState>) -> Router {
    let api = Router::new()
        .route(
            "/api/v1/media-manager/folders",
            get(list_folders).post(create_folder),
        )
        .route(
            "/api/v1/media-manager/folders/{id}",
            get(get_folder).patch(update_folder).delete(delete_folder),
        )
        .route(
            "/api/v1/media-manager/files",
            // Create File streams its body itself; no size limit but --max-upload-size.
            get(list_files)
                .post(create_file)
                .layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/v1/media-manager/files/{id}",
            get(get_file).patch(update_file).delete(delete_file),
        )
        .route_layer(from_fn_with_state(st.clone(), auth))
        .layer(from_fn_with_state(st.clone(), variants::layer));
    let cdn = Router::new().route("/cdn/{upload_id}/{name}", get(cdn::serve));
    // Test hooks change what every client sees (faults) and show its activity (stats):
    // absent unless asked for, and behind the token like the API.
    let mut emulator = Router::new();
    if st.test_hooks {
        emulator = emulator
            .route(
                "/_emulator/stats",
                get(faults::get_stats).delete(faults::reset_stats),
            )
            .route(
                "/_emulator/faults",
                get(faults::get_faults)
                    .put(faults::put_faults)
                    .delete(faults::clear_faults),
            )
            .route_layer(from_fn_with_state(st.clone(), auth));
    }
    api.merge(cdn)
        .layer(from_fn_with_state(st.clone(), faults::layer))
        .merge(emulator)
        .fallback(|| async { error_response(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            error_response(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
        })
        .with_state(st)
}

/// Bearer-token check for the API routes.
async fn auth(State(st): St, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_string())
        });
    let ok = presented.is_some_and(|t| st.tokens.iter().any(|k| constant_time_eq(k, &t)));
    if !ok {
        let mut r = error_response(StatusCode::UNAUTHORIZED, "missing or invalid bearer token");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    next.run(req).await
}

fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

// ---------------------------------------------------------------- request parsing helpers

/// The `{id}` path segment, with a JSON 400 when it cannot be decoded (e.g. bad UTF-8).
struct Id(String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = HttpError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, HttpError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(id)| Id(id))
            .map_err(|e| HttpError::bad_request(e.body_text()))
    }
}

type BodyBytes = Result<Bytes, BytesRejection>;

/// A small JSON body as a JSON object; rejections answered in JSON too.
fn json_body(body: BodyBytes) -> HttpResult<Map<String, Value>> {
    let body = body.map_err(|e| HttpError::new(e.status(), e.body_text()))?;
    json_object(&body)
}

type QueryParams = Result<Query<HashMap<String, String>>, QueryRejection>;

fn query_map(q: QueryParams) -> HttpResult<HashMap<String, String>> {
    q.map(|Query(m)| m)
        .map_err(|e| HttpError::bad_request(format!("invalid query string: {e}")))
}

/// `page` (from 1, default 1) and `pageSize` (default 10, clamped to `max`).
fn paging(q: &HashMap<String, String>, max: u64) -> HttpResult<(u64, u64)> {
    let positive = |name: &str, default: u64| -> HttpResult<u64> {
        match q.get(name) {
            None => Ok(default),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(n) if n >= 1 => Ok(n),
                _ => Err(HttpError::bad_request(format!(
                    "{name} must be a positive integer"
                ))),
            },
        }
    };
    let page = positive("page", 1)?;
    let page_size = positive("pageSize", DEFAULT_PAGE_SIZE)?.min(max);
    // Keep the SQL offset in range.
    if page > i64::MAX as u64 / max {
        return Err(HttpError::bad_request("page is too large"));
    }
    Ok((page, page_size))
}

fn parent_filter(q: &HashMap<String, String>, name: &str) -> ParentFilter {
    match q.get(name).map(|s| s.trim()) {
        None => ParentFilter::All,
        Some("root") | Some("null") | Some("") => ParentFilter::Root,
        Some(id) => ParentFilter::Id(id.to_string()),
    }
}

/// The members the API knows; memory bounded by the body's size (see [`fields`]).
fn json_object(body: &[u8]) -> HttpResult<Map<String, Value>> {
    match fields::parse_body(body) {
        Ok(fields::Body::Object(m)) => Ok(m),
        Ok(fields::Body::NotObject) => {
            Err(HttpError::bad_request("the body must be a JSON object"))
        }
        Err(e) => Err(HttpError::bad_request(format!("malformed JSON body: {e}"))),
    }
}

/// Absent → `None`; `null` → `Some(None)`; a string → `Some(Some(s))`; else 422.
fn nullable_string(m: &Map<String, Value>, key: &str) -> HttpResult<Option<Option<String>>> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) => Ok(Some(Some(s.clone()))),
        Some(_) => Err(HttpError::unprocessable(format!(
            "{key} must be a string or null"
        ))),
    }
}

fn string_field(m: &Map<String, Value>, key: &str) -> HttpResult<Option<String>> {
    match m.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(HttpError::unprocessable(format!("{key} must be a string"))),
    }
}

/// Absent or `null` → `None`.
fn bool_field(m: &Map<String, Value>, key: &str) -> HttpResult<Option<bool>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(HttpError::unprocessable(format!("{key} must be a boolean"))),
    }
}

/// Absent or `null` → `None`.
fn int_field(m: &Map<String, Value>, key: &str) -> HttpResult<Option<i64>> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| HttpError::unprocessable(format!("{key} must be an integer"))),
    }
}

fn folder_name(name: Option<String>) -> HttpResult<String> {
    match name {
        Some(n) if !n.is_empty() => Ok(n),
        _ => Err(HttpError::unprocessable(
            "name is required and must be a non-empty string",
        )),
    }
}

// ---------------------------------------------------------------- response shapes

/// Wire shape of a folder; the field order follows the documentation.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FolderOut<'a> {
    id: &'a str,
    name: &'a str,
    parent_id: Option<&'a str>,
    created_at: &'a str,
    updated_at: &'a str,
}

/// Wire shape of a file, exactly the documented example plus `upload.mimeType`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct FileOut<'a> {
    id: &'a str,
    upload_id: &'a str,
    folder_id: Option<&'a str>,
    title: &'a str,
    description: Option<&'a str>,
    alt_text: Option<&'a str>,
    sort_order: i64,
    is_favorite: bool,
    is_private: bool,
    created_at: &'a str,
    updated_at: &'a str,
    upload: UploadOut<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UploadOut<'a> {
    id: &'a str,
    file_name: &'a str,
    file_size: u64,
    file_url: String,
    mime_type: &'a str,
}

fn folder_json(f: &FolderRow) -> FolderOut<'_> {
    FolderOut {
        id: &f.id,
        name: &f.name,
        parent_id: f.parent_id.as_deref(),
        created_at: &f.created_at,
        updated_at: &f.updated_at,
    }
}

fn file_json<'a>(st: &AppState, f: &'a FileRow) -> FileOut<'a> {
    let url = st.signer.url(
        &st.base_url,
        &f.upload_id,
        &f.file_name,
        cdn::expires_at(st.url_ttl),
    );
    FileOut {
        id: &f.id,
        upload_id: &f.upload_id,
        folder_id: f.folder_id.as_deref(),
        title: &f.title,
        description: f.description.as_deref(),
        alt_text: f.alt_text.as_deref(),
        sort_order: f.sort_order,
        is_favorite: f.is_favorite,
        is_private: f.is_private,
        created_at: &f.created_at,
        updated_at: &f.updated_at,
        upload: UploadOut {
            id: &f.upload_id,
            file_name: &f.file_name,
            file_size: f.file_size,
            file_url: url,
            mime_type: &f.mime_type,
        },
    }
}

#[derive(Serialize)]
struct DataOut<T> {
    data: T,
}

fn data<T: Serialize>(v: T) -> Response {
    Json(DataOut { data: v }).into_response()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ListOut<T> {
    total: u64,
    page: u64,
    page_size: u64,
    last_page: u64,
    data: Vec<T>,
}

fn list_json<T: Serialize>(page: u64, page_size: u64, total: u64, items: Vec<T>) -> Response {
    Json(ListOut {
        total,
        page,
        page_size,
        last_page: total.div_ceil(page_size).max(1),
        data: items,
    })
    .into_response()
}

// ---------------------------------------------------------------- folders

async fn list_folders(State(st): St, q: QueryParams) -> HttpResult<Response> {
    let q = query_map(q)?;
    let (page, size) = paging(&q, st.variants.max_page_size(MAX_PAGE_SIZE))?;
    let filter = parent_filter(&q, "parentId");
    let p = st
        .db
        .call(move |c| db::list_folders(c, &filter, page, size))
        .await?;
    let items: Vec<_> = p.items.iter().map(folder_json).collect();
    Ok(list_json(page, size, p.total, items))
}

async fn get_folder(State(st): St, Id(id): Id) -> HttpResult<Response> {
    let f = st.db.call(move |c| db::get_folder(c, &id)).await?;
    let f = f.ok_or_else(|| HttpError::not_found("folder not found"))?;
    Ok(data(folder_json(&f)))
}

async fn create_folder(State(st): St, body: BodyBytes) -> HttpResult<Response> {
    let m = json_body(body)?;
    let name = folder_name(string_field(&m, "name")?)?;
    let parent = nullable_string(&m, "parentId")?.flatten();
    let v = st.variants;
    let f = st
        .db
        .call(move |c| {
            variants::check_folder_name(c, v, &name, parent.as_deref(), None)?;
            db::insert_folder(c, &name, parent.as_deref())
        })
        .await?;
    Ok(data(folder_json(&f)))
}

async fn update_folder(State(st): St, Id(id): Id, body: BodyBytes) -> HttpResult<Response> {
    let m = json_body(body)?;
    let patch = FolderPatch {
        name: match string_field(&m, "name")? {
            Some(n) => Some(folder_name(Some(n))?),
            None => None,
        },
        parent_id: nullable_string(&m, "parentId")?,
    };
    let v = st.variants;
    let f = st
        .db
        .call(move |c| {
            if let Some(cur) = db::get_folder(c, &id)? {
                let name = patch.name.as_deref().unwrap_or(&cur.name);
                let parent = patch.parent_id.clone().unwrap_or(cur.parent_id);
                variants::check_folder_name(c, v, name, parent.as_deref(), Some(&id))?;
            }
            db::update_folder(c, &id, &patch)
        })
        .await?;
    Ok(data(folder_json(&f)))
}

async fn delete_folder(State(st): St, Id(id): Id) -> HttpResult<Response> {
    let f = st.db.call(move |c| db::delete_folder(c, &id)).await?;
    Ok(data(folder_json(&f)))
}

// ---------------------------------------------------------------- files

async fn list_files(State(st): St, q: QueryParams) -> HttpResult<Response> {
    let q = query_map(q)?;
    let (page, size) = paging(&q, st.variants.max_page_size(MAX_PAGE_SIZE))?;
    let filter = parent_filter(&q, "folderId");
    let p = st
        .db
        .call(move |c| db::list_files(c, &filter, page, size))
        .await?;
    let items: Vec<_> = p.items.iter().map(|f| file_json(&st, f)).collect();
    Ok(list_json(page, size, p.total, items))
}

async fn get_file(State(st): St, Id(id): Id) -> HttpResult<Response> {
    let f = st.db.call(move |c| db::get_file(c, &id)).await?;
    let f = f.ok_or_else(|| HttpError::not_found("file not found"))?;
    Ok(data(file_json(&st, &f)))
}

async fn update_file(State(st): St, Id(id): Id, body: BodyBytes) -> HttpResult<Response> {
    let m = json_body(body)?;
    let patch = FilePatch {
        title: string_field(&m, "title")?,
        description: nullable_string(&m, "description")?,
        alt_text: nullable_string(&m, "altText")?,
        sort_order: int_field(&m, "sortOrder")?,
        is_favorite: bool_field(&m, "isFavorite")?,
        is_private: bool_field(&m, "isPrivate")?,
        folder_id: nullable_string(&m, "folderId")?,
    };
    let v = st.variants;
    let f = st
        .db
        .call(move |c| {
            if let Some(cur) = db::get_file(c, &id)? {
                let title = patch.title.as_deref().unwrap_or(&cur.title);
                let folder = patch.folder_id.clone().unwrap_or(cur.folder_id);
                variants::check_file_title(c, v, title, folder.as_deref(), Some(&id))?;
            }
            db::update_file(c, &id, &patch)
        })
        .await?;
    Ok(data(file_json(&st, &f)))
}

async fn delete_file(State(st): St, Id(id): Id) -> HttpResult<Response> {
    let f = st.db.call(move |c| db::delete_file(c, &id)).await?;
    if let Err(e) = st.blobs.remove(&f.upload_id).await {
        // The metadata is gone, so the file is deleted for every caller; a leftover blob
        // only wastes space.
        tracing::warn!(error = %e, "could not remove a deleted file's blob");
    }
    Ok(data(file_json(&st, &f)))
}

/// Create File. The body is streamed: `data` is decoded into a temp file as it arrives, so
/// memory use does not grow with the upload.
async fn create_file(State(st): St, body: Body) -> HttpResult<Response> {
    let temp = st.blobs.temp_path();
    let mut guard = TempGuard::new(temp.clone());
    let mut stream = body.into_data_stream();
    let received = receive_upload(&st, &temp, &mut stream).await;
    let (fields, size) = match received {
        Ok(r) => r,
        Err(e) => {
            // Remove the partial blob now, then read what the client still sends: a
            // response while it is mid-upload would reach it as a reset, not as the error.
            drop(guard);
            drain(&mut stream).await;
            return Err(e);
        }
    };
    let row = new_file_row(fields, size)?;
    st.blobs.commit(&temp, &row.upload_id).await?;
    guard.disarm();
    let insert_row = row.clone();
    let v = st.variants;
    let inserted = st
        .db
        .call(move |c| {
            let r = &insert_row;
            variants::check_file_title(c, v, &r.title, r.folder_id.as_deref(), None)?;
            variants::check_file_name(c, v, &r.file_name, r.folder_id.as_deref())?;
            db::insert_file(c, r)
        })
        .await;
    if let Err(e) = inserted {
        let _ = st.blobs.remove(&row.upload_id).await;
        return Err(e);
    }
    Ok(data(file_json(&st, &row)))
}

type DataStream = axum::body::BodyDataStream;

/// Streams the body through the parser into `temp`. Returns the other fields and the
/// decoded size.
async fn receive_upload(
    st: &AppState,
    temp: &std::path::Path,
    stream: &mut DataStream,
) -> HttpResult<(Map<String, Value>, u64)> {
    let file = super::blobs::create_temp(temp).await?;
    let mut writer = tokio::io::BufWriter::with_capacity(1 << 20, file);
    let mut parser = UploadParser::new();
    let mut out = Vec::with_capacity(64 * 1024);
    let mut size = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|e| HttpError::bad_request(format!("reading the request body: {e}")))?;
        out.clear();
        parser.feed(&chunk, &mut out).map_err(parse_error)?;
        size += out.len() as u64;
        if size > st.max_upload_size {
            return Err(HttpError::too_large(format!(
                "upload exceeds the maximum size of {} bytes",
                st.max_upload_size
            )));
        }
        writer.write_all(&out).await?;
    }
    let fields = parser.finish().map_err(parse_error)?;
    if fields.data_not_string {
        return Err(HttpError::unprocessable("data must be a base64 string"));
    }
    if !fields.data_present {
        return Err(HttpError::unprocessable("data is required"));
    }
    writer.flush().await?;
    let file = writer.into_inner();
    file.sync_all().await?;
    Ok((fields.fields, size))
}

fn parse_error(e: UploadParseError) -> HttpError {
    match e {
        UploadParseError::MetadataTooLarge => HttpError::too_large(e.to_string()),
        _ => HttpError::bad_request(e.to_string()),
    }
}

/// Reads and discards the rest of a rejected body, for at most a few seconds.
async fn drain(stream: &mut DataStream) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline.into(), stream.next()).await {}
}

fn new_file_row(m: Map<String, Value>, size: u64) -> HttpResult<FileRow> {
    let file_name = match string_field(&m, "fileName")? {
        Some(n) if !n.is_empty() => n,
        _ => {
            return Err(HttpError::unprocessable(
                "fileName is required and must be a non-empty string",
            ))
        }
    };
    let mime_type = match nullable_string(&m, "mimeType")?.flatten() {
        Some(t) if !t.trim().is_empty() => t,
        _ => mime_guess::from_path(&file_name)
            .first_or_octet_stream()
            .essence_str()
            .to_string(),
    };
    let now = db::now_ts();
    // File and upload ids look like the documented example (random, v4); folder ids are
    // v7. Random ids also keep the `~<first 8 of id>` duplicate suffixes distinct.
    let upload_id = uuid::Uuid::new_v4().to_string();
    Ok(FileRow {
        id: uuid::Uuid::new_v4().to_string(),
        upload_id,
        folder_id: nullable_string(&m, "folderId")?.flatten(),
        title: nullable_string(&m, "title")?
            .flatten()
            .unwrap_or_else(|| file_name.clone()),
        description: nullable_string(&m, "description")?.flatten(),
        alt_text: nullable_string(&m, "altText")?.flatten(),
        sort_order: int_field(&m, "sortOrder")?.unwrap_or(0),
        is_favorite: bool_field(&m, "isFavorite")?.unwrap_or(false),
        is_private: bool_field(&m, "isPrivate")?.unwrap_or(false),
        created_at: now.clone(),
        updated_at: now,
        file_name,
        file_size: size,
        mime_type,
    })
}
