//! The client's one error type, its errno mapping (status → errno as documented in
//! SEMANTICS.md) and the one definition of a transient failure.
//!
//! Messages never hold a token or a signed URL: everything that goes into one passes
//! through [`scrub`].

use std::fmt;

/// What went wrong, as far as a caller needs to branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiErrorKind {
    /// 400 / 422: the service rejected the input.
    InvalidInput,
    /// 401: token missing, wrong, expired or revoked.
    Unauthorized,
    /// 403 from the API (not the CDN).
    Forbidden,
    /// 404.
    NotFound,
    /// 409 (for example deleting a folder that is not empty).
    Conflict,
    /// 409 to a create or a rename: the name is taken in that folder (a service with
    /// unique names). Callers that can make room retry; elsewhere it is `EEXIST`.
    NameTaken,
    /// 413: upload over the service's size limit.
    TooLarge,
    /// 429 after all retries.
    RateLimited,
    /// 5xx after all retries.
    Server,
    /// Timeouts, refused or reset connections, truncated bodies, after all retries.
    Transport,
    /// 403 from a signed URL: it expired or was altered. Refresh the URL and retry.
    UrlExpired,
    /// The service answered 2xx with a body we could not understand, or one that breaks the
    /// protocol: larger than the client's cap, or a listing that repeats or exceeds what its
    /// first page announced.
    Decode,
    /// A local failure (reading the file to upload, for example).
    Local,
    /// The service answered an update that asked for a move without moving the object.
    MoveIgnored,
    /// Any other status.
    Other,
}

/// One failed API or CDN call.
#[derive(Debug)]
pub struct ApiError {
    pub kind: ApiErrorKind,
    /// HTTP status, when there was a response.
    pub status: Option<u16>,
    /// Human-readable, scrubbed of tokens and signed URLs.
    pub message: String,
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl ApiError {
    pub fn new(kind: ApiErrorKind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            status: None,
            message: scrub(&message.into()),
            source: None,
        }
    }

    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Kind of error for an HTTP status that the API (not the CDN) answered.
    pub fn kind_for_status(status: u16) -> ApiErrorKind {
        match status {
            400 | 422 => ApiErrorKind::InvalidInput,
            401 => ApiErrorKind::Unauthorized,
            403 => ApiErrorKind::Forbidden,
            404 => ApiErrorKind::NotFound,
            409 => ApiErrorKind::Conflict,
            413 => ApiErrorKind::TooLarge,
            429 => ApiErrorKind::RateLimited,
            500..=599 => ApiErrorKind::Server,
            _ => ApiErrorKind::Other,
        }
    }

    /// The errno a filesystem operation reports for this error.
    pub fn errno(&self) -> i32 {
        Self::errno_of(self.kind)
    }

    /// The status table: which errno a failure of this kind becomes at the mount.
    pub fn errno_of(kind: ApiErrorKind) -> i32 {
        match kind {
            ApiErrorKind::InvalidInput => libc::EINVAL,
            ApiErrorKind::Unauthorized | ApiErrorKind::Forbidden | ApiErrorKind::UrlExpired => {
                libc::EACCES
            }
            ApiErrorKind::NotFound => libc::ENOENT,
            ApiErrorKind::Conflict => libc::ENOTEMPTY,
            ApiErrorKind::NameTaken => libc::EEXIST,
            ApiErrorKind::TooLarge => libc::EFBIG,
            // `mv` copies and deletes instead.
            ApiErrorKind::MoveIgnored => libc::EXDEV,
            ApiErrorKind::RateLimited => libc::EAGAIN,
            ApiErrorKind::Server
            | ApiErrorKind::Transport
            | ApiErrorKind::Decode
            | ApiErrorKind::Local
            | ApiErrorKind::Other => libc::EIO,
        }
    }

    /// A 409 answered to a create or a rename means the name is taken, not a non-empty
    /// folder: the calls that create or rename pass their results through here.
    pub fn name_taken_on_conflict<T>(result: ApiResult<T>) -> ApiResult<T> {
        result.map_err(|mut e| {
            if e.kind == ApiErrorKind::Conflict {
                e.kind = ApiErrorKind::NameTaken;
            }
            e
        })
    }

    /// True for failures that another attempt may cure. The one place that decides it: the
    /// client's retry loop and the retry loops above it (the upload queue) all ask here.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.kind,
            ApiErrorKind::RateLimited | ApiErrorKind::Server | ApiErrorKind::Transport
        )
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(s) => write!(f, "{} (HTTP {s})", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

impl std::error::Error for ApiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

/// Removes secrets from text that may end up in a log or an error message:
/// query strings of URLs (signatures), `Bearer …` values and `kpt_…` tokens.
pub fn scrub(text: &str) -> String {
    use regex::Regex;
    use std::sync::LazyLock;
    static RULES: LazyLock<[(Regex, &'static str); 4]> = LazyLock::new(|| {
        [
            (
                Regex::new(r#"(https?://[^\s?"'<>]*)\?[^\s"'<>]*"#).unwrap(),
                "$1?<redacted>",
            ),
            (Regex::new(r"(?i)(bearer\s+)\S+").unwrap(), "${1}<redacted>"),
            (Regex::new(r"kpt_[A-Za-z0-9_\-]+").unwrap(), "<redacted>"),
            (
                Regex::new(r#"(Signature|Expires|Key-Pair-Id)=[^&\s"'<>]*"#).unwrap(),
                "$1=<redacted>",
            ),
        ]
    });
    let mut out = text.to_string();
    for (re, with) in RULES.iter() {
        out = re.replace_all(&out, *with).into_owned();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_removes_signed_query_and_tokens() {
        let s = scrub("GET https://cdn.x/a/b.png?Expires=1&Signature=abc&Key-Pair-Id=K failed; auth Bearer kpt_secret123 bad");
        assert!(!s.contains("abc"), "{s}");
        assert!(!s.contains("kpt_secret123"), "{s}");
        assert!(s.contains("https://cdn.x/a/b.png"), "{s}");
        assert_eq!(scrub("plain message"), "plain message");
        assert!(!scrub("token kpt_zzz").contains("zzz"));
        assert!(!scrub("Signature=QQQ").contains("QQQ"));
    }

    #[test]
    fn errno_table_matches_contract() {
        for (status, errno) in [
            (400, libc::EINVAL),
            (422, libc::EINVAL),
            (401, libc::EACCES),
            (403, libc::EACCES),
            (404, libc::ENOENT),
            (409, libc::ENOTEMPTY),
            (413, libc::EFBIG),
            (429, libc::EAGAIN),
            (500, libc::EIO),
            (503, libc::EIO),
        ] {
            let e = ApiError::new(ApiError::kind_for_status(status), "x").with_status(status);
            assert_eq!(e.errno(), errno, "status {status}");
        }
        assert_eq!(
            ApiError::new(ApiErrorKind::Transport, "reset").errno(),
            libc::EIO
        );
    }

    #[test]
    fn a_conflict_on_create_or_rename_is_a_taken_name() {
        let conflict: ApiResult<()> =
            Err(ApiError::new(ApiErrorKind::Conflict, "taken").with_status(409));
        let e = ApiError::name_taken_on_conflict(conflict).unwrap_err();
        assert_eq!((e.kind, e.status), (ApiErrorKind::NameTaken, Some(409)));
        assert_eq!(e.errno(), libc::EEXIST);
        let other: ApiResult<()> = Err(ApiError::new(ApiErrorKind::NotFound, "gone"));
        let e = ApiError::name_taken_on_conflict(other).unwrap_err();
        assert_eq!(e.kind, ApiErrorKind::NotFound);
    }
}
