//! The CDN side: CloudFront-style signed URLs for file bytes, served with Range support.
//!
//! `fileUrl = http://ADDR/cdn/<uploadId>/<file name>?Expires=<unix s>&Signature=<sig>&Key-Pair-Id=<id>`
//! where `sig` is URL-safe base64 (no padding) of HMAC-SHA256(secret, path + "\n" + expires)
//! and `path` is the canonical percent-encoded path. Like the real CDN, no Authorization
//! header is needed, and an expired, altered or incomplete URL gets 403 with an XML body.
//! Only the one form the signer writes is accepted: the canonical path and exactly
//! `Expires=E&Signature=S&Key-Pair-Id=K`, with no other spelling of the same values.
//!
//! Files are served from the API's own origin with the type their uploader chose, so every
//! answer says `X-Content-Type-Options: nosniff` (set for the whole server) and active
//! content (HTML, SVG, scripts, XML, anything not plainly passive) is sent as an
//! attachment: a browser downloads it instead of running it.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::{db, AppState};

type HmacSha256 = Hmac<Sha256>;

pub struct Signer {
    secret: Vec<u8>,
    key_pair_id: String,
}

impl Signer {
    pub fn new(secret: Vec<u8>) -> Self {
        // A stable, non-secret id derived from the secret, shaped like CloudFront's.
        let digest = Sha256::digest(&secret);
        let key_pair_id = format!("K{}", hex::encode_upper(&digest[..7]));
        Signer {
            secret,
            key_pair_id,
        }
    }

    fn mac(&self, path: &str, expires: u64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes any key");
        mac.update(path.as_bytes());
        mac.update(b"\n");
        mac.update(expires.to_string().as_bytes());
        mac
    }

    /// The signed URL of an upload, valid until `expires` (Unix seconds).
    pub fn url(&self, base_url: &str, upload_id: &str, file_name: &str, expires: u64) -> String {
        let path = cdn_path(upload_id, file_name);
        let sig = URL_SAFE_NO_PAD.encode(self.mac(&path, expires).finalize().into_bytes());
        format!(
            "{base_url}{path}?Expires={expires}&Signature={sig}&Key-Pair-Id={}",
            self.key_pair_id
        )
    }

    /// Checks a signature in constant time.
    fn verify(&self, path: &str, expires: u64, signature: &str, key_pair_id: &str) -> bool {
        if key_pair_id != self.key_pair_id {
            return false;
        }
        let Ok(sig) = URL_SAFE_NO_PAD.decode(signature) else {
            return false;
        };
        self.mac(path, expires).verify_slice(&sig).is_ok()
    }
}

/// Canonical path of an upload: the name percent-encoded except RFC 3986 unreserved
/// characters, so no client's URL normalisation changes it.
///
/// A name that is a dot segment (`.`, `..`) or empty gets a leading `_`: URL parsers drop
/// dot segments even percent-encoded (WHATWG treats `%2E` as `.`), which would turn the URL
/// into another path. The name segment is cosmetic: the blob is found by upload id.
pub fn cdn_path(upload_id: &str, file_name: &str) -> String {
    let name = match file_name {
        "" | "." | ".." => format!("_{file_name}"),
        _ => file_name.to_string(),
    };
    format!(
        "/cdn/{}/{}",
        percent_encode(upload_id),
        percent_encode(&name)
    )
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Expiry for a URL made now.
pub fn expires_at(ttl: std::time::Duration) -> u64 {
    now_secs() + ttl.as_secs()
}

fn xml_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    (status, [(header::CONTENT_TYPE, "application/xml")], body).into_response()
}

/// Splits the query of a signed URL, accepting only its canonical form: the three
/// parameters in the signer's order, each once, nothing else; `Expires` plain decimal
/// digits without a sign or leading zero; the signature URL-safe base64 without padding.
pub fn parse_signed_query(query: &str) -> Option<(u64, &str, &str)> {
    let rest = query.strip_prefix("Expires=")?;
    let (expires, rest) = rest.split_once("&Signature=")?;
    let (sig, key_pair_id) = rest.split_once("&Key-Pair-Id=")?;
    let canonical_number = !expires.is_empty()
        && expires.bytes().all(|b| b.is_ascii_digit())
        && (expires == "0" || !expires.starts_with('0'));
    let b64url = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if !canonical_number
        || !b64url(sig)
        || key_pair_id.is_empty()
        || !key_pair_id.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        return None;
    }
    Some((expires.parse().ok()?, sig, key_pair_id))
}

/// Types a browser shows without running anything; every other type is an attachment.
fn is_passive(mime: &str) -> bool {
    let essence = mime
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let (top, sub) = essence.split_once('/').unwrap_or((&essence, ""));
    match top {
        "image" => !sub.contains("svg") && !sub.contains("xml"),
        "audio" | "video" => true,
        "text" => matches!(sub, "plain" | "csv"),
        "application" => matches!(sub, "octet-stream" | "pdf" | "json" | "zip" | "gzip"),
        _ => false,
    }
}

fn access_denied() -> Response {
    xml_error(StatusCode::FORBIDDEN, "AccessDenied", "Access denied")
}

/// What a Range header asks for, against a body of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable Range header: the whole body (200).
    Full,
    /// Bytes `start..=end` (206).
    Partial { start: u64, end: u64 },
    /// 416.
    Unsatisfiable,
}

/// Parses a single `bytes=` range. Syntactically invalid or multi-range headers are
/// ignored (answered with the whole body), as RFC 9110 allows.
pub fn parse_range(value: Option<&str>, len: u64) -> RangeRequest {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    let spec = spec.trim();
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeRequest::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| -> Option<u64> {
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    match (a.is_empty(), b.is_empty()) {
        // bytes=-n: the last n bytes.
        (true, false) => match num(b) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(n) if len > 0 => RangeRequest::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Full,
        },
        // bytes=a-
        (false, true) => match num(a) {
            Some(start) if start < len => RangeRequest::Partial {
                start,
                end: len - 1,
            },
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Full,
        },
        // bytes=a-b
        (false, false) => match (num(a), num(b)) {
            (Some(start), Some(end)) if start <= end => {
                if start >= len {
                    RangeRequest::Unsatisfiable
                } else {
                    RangeRequest::Partial {
                        start,
                        end: end.min(len - 1),
                    }
                }
            }
            _ => RangeRequest::Full,
        },
        (true, true) => RangeRequest::Full,
    }
}

/// `GET`/`HEAD /cdn/{uploadId}/{name}`.
pub async fn serve(
    State(st): State<Arc<AppState>>,
    Path((upload_id, name)): Path<(String, String)>,
    uri: Uri,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some((expires, sig, kp)) = query.as_deref().and_then(parse_signed_query) else {
        return access_denied();
    };
    // The path as sent, not as decoded: another encoding of the same name is refused.
    let path = cdn_path(&upload_id, &name);
    if uri.path() != path || !st.signer.verify(&path, expires, sig, kp) || now_secs() > expires {
        return access_denied();
    }

    let not_found = || {
        xml_error(
            StatusCode::NOT_FOUND,
            "NoSuchKey",
            "The specified key does not exist.",
        )
    };
    let Some(blob) = st.blobs.path(&upload_id) else {
        return not_found();
    };
    let id = upload_id.clone();
    let mime = match st.db.call(move |c| db::get_upload(c, &id)).await {
        Ok(Some((_, _, mime))) => mime,
        Ok(None) => return not_found(),
        Err(e) => return e.into_response(),
    };
    let mut file = match tokio::fs::File::open(&blob).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return not_found(),
        Err(e) => return super::error::HttpError::from(e).into_response(),
    };
    let len = match file.metadata().await {
        Ok(m) => m.len(),
        Err(e) => return super::error::HttpError::from(e).into_response(),
    };

    let range_header = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let range = if st.ignore_range {
        RangeRequest::Full
    } else {
        parse_range(range_header, len)
    };
    let mut resp_headers = HeaderMap::new();
    resp_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(&mime)
            .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream")),
    );
    if !is_passive(&mime) {
        resp_headers.insert(
            header::CONTENT_DISPOSITION,
            HeaderValue::from_str(&format!(
                "attachment; filename*=UTF-8''{}",
                percent_encode(&name)
            ))
            .unwrap_or_else(|_| HeaderValue::from_static("attachment")),
        );
    }
    if !st.ignore_range {
        resp_headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{upload_id}\"")) {
        // Blobs never change: the upload id is a perfect entity tag.
        resp_headers.insert(header::ETAG, etag);
    }
    let (status, start, count) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, len),
        RangeRequest::Partial { start, end } => {
            resp_headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")).expect("ascii"),
            );
            (StatusCode::PARTIAL_CONTENT, start, end - start + 1)
        }
        RangeRequest::Unsatisfiable => {
            resp_headers.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{len}")).expect("ascii"),
            );
            let mut r = xml_error(
                StatusCode::RANGE_NOT_SATISFIABLE,
                "InvalidRange",
                "The requested range is not satisfiable",
            );
            r.headers_mut().extend(
                resp_headers
                    .into_iter()
                    .filter(|(k, _)| k.as_ref() != Some(&header::CONTENT_TYPE)),
            );
            return r;
        }
    };
    resp_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(count));
    if start > 0 {
        if let Err(e) = file.seek(std::io::SeekFrom::Start(start)).await {
            return super::error::HttpError::from(e).into_response();
        }
    }
    let stream = ReaderStream::with_capacity(file.take(count), 64 * 1024);
    (status, resp_headers, Body::from_stream(stream)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeRequest::*;
        let p = |s, e| Partial { start: s, end: e };
        assert_eq!(parse_range(None, 10), Full);
        assert_eq!(parse_range(Some("bytes=0-0"), 10), p(0, 0));
        assert_eq!(parse_range(Some("bytes=3-7"), 10), p(3, 7));
        assert_eq!(parse_range(Some("bytes=3-100"), 10), p(3, 9));
        assert_eq!(parse_range(Some("bytes=9-"), 10), p(9, 9));
        assert_eq!(parse_range(Some("bytes=-3"), 10), p(7, 9));
        assert_eq!(parse_range(Some("bytes=-30"), 10), p(0, 9));
        assert_eq!(parse_range(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=10-20"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=0-"), 0), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-5"), 0), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-3"), 10), Full);
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=x-1"), 10), Full);
        assert_eq!(parse_range(Some("bytes=-"), 10), Full);
    }

    #[test]
    fn only_the_canonical_query_is_accepted() {
        let ok = "Expires=1000&Signature=ab-_C9&Key-Pair-Id=KABC";
        assert_eq!(parse_signed_query(ok), Some((1000, "ab-_C9", "KABC")));
        assert_eq!(
            parse_signed_query("Expires=0&Signature=a&Key-Pair-Id=K"),
            Some((0, "a", "K"))
        );
        for bad in [
            "Expires=+1000&Signature=ab&Key-Pair-Id=KABC",
            "Expires=01000&Signature=ab&Key-Pair-Id=KABC",
            "Expires=1000&Signature=ab=&Key-Pair-Id=KABC",
            "Expires=1000&Signature=ab&Key-Pair-Id=KABC&Expires=1000",
            "Expires=1000&Expires=1000&Signature=ab&Key-Pair-Id=KABC",
            "Expires=1000&Signature=ab&Key-Pair-Id=KABC&x=1",
            "x=1&Expires=1000&Signature=ab&Key-Pair-Id=KABC",
            "Signature=ab&Expires=1000&Key-Pair-Id=KABC",
            "Expires=1000&Signature=ab&Key-Pair-Id=KABC=",
            "Expires=1000&Signature=a%62&Key-Pair-Id=KABC",
            "Expires=&Signature=ab&Key-Pair-Id=KABC",
            "Expires=99999999999999999999999&Signature=ab&Key-Pair-Id=KABC",
            "Expires=1000&Signature=&Key-Pair-Id=KABC",
            "Expires=1000&Signature=ab&Key-Pair-Id=",
        ] {
            assert_eq!(parse_signed_query(bad), None, "{bad}");
        }
    }

    #[test]
    fn active_types_are_not_passive() {
        for t in [
            "image/png",
            "image/jpeg",
            "video/mp4",
            "text/plain; charset=utf-8",
        ] {
            assert!(is_passive(t), "{t}");
        }
        for t in [
            "text/html",
            "TEXT/HTML; charset=utf-8",
            "image/svg+xml",
            "application/javascript",
            "text/javascript",
            "application/xml",
            "text/xml",
            "application/xhtml+xml",
            "",
            "nonsense",
        ] {
            assert!(!is_passive(t), "{t}");
        }
    }

    #[test]
    fn signatures_verify_and_bind_path_and_expiry() {
        let s = Signer::new(vec![7; 32]);
        let url = s.url("http://h", "u-1", "a b/c.txt", 1000);
        assert!(url.starts_with("http://h/cdn/u-1/a%20b%2Fc.txt?Expires=1000&Signature="));
        let sig = url
            .split("Signature=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap();
        let path = cdn_path("u-1", "a b/c.txt");
        assert!(s.verify(&path, 1000, sig, &s.key_pair_id));
        assert!(!s.verify(&path, 1001, sig, &s.key_pair_id));
        assert!(!s.verify(&cdn_path("u-1", "other"), 1000, sig, &s.key_pair_id));
        assert!(!s.verify(&path, 1000, sig, "KWRONG"));
        assert!(!Signer::new(vec![8; 32]).verify(&path, 1000, sig, &s.key_pair_id));
    }
}
