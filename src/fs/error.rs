//! The filesystem core's one error type: what went wrong ([`Kind`], typed; its errno for
//! the kernel is derived in one place), a message for the log, the source chain, and the
//! level to log it at (expected errors such as ENOENT from shell completion must not flood
//! the log).

use std::fmt;

use tracing::Level;

use crate::api::{ApiError, ApiErrorKind};

/// What went wrong, as the core sees it. The errno the kernel gets is derived from it in
/// one place, [`Kind::errno`], when the error leaves the core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    NotFound,
    Exists,
    NotDir,
    IsDir,
    NotEmpty,
    ReadOnly,
    NameTooLong,
    /// A name or value the core or the service cannot take.
    Invalid,
    BadHandle,
    Busy,
    NotSupported,
    NoAttribute,
    TryAgain,
    NotPermitted,
    AccessDenied,
    CrossDevice,
    TooLarge,
    Io,
    /// A local file operation (staging, pending area) failed with this OS error.
    Os(i32),
    /// The service or the way to it failed, as the client classified it.
    Remote(ApiErrorKind),
}

impl Kind {
    /// The one mapping from the core's errors to errnos (remote failures by the client's
    /// status table, [`ApiError::errno_of`]).
    pub fn errno(self) -> i32 {
        match self {
            Kind::NotFound => libc::ENOENT,
            Kind::Exists => libc::EEXIST,
            Kind::NotDir => libc::ENOTDIR,
            Kind::IsDir => libc::EISDIR,
            Kind::NotEmpty => libc::ENOTEMPTY,
            Kind::ReadOnly => libc::EROFS,
            Kind::NameTooLong => libc::ENAMETOOLONG,
            Kind::Invalid => libc::EINVAL,
            Kind::BadHandle => libc::EBADF,
            Kind::Busy => libc::EBUSY,
            Kind::NotSupported => libc::ENOTSUP,
            Kind::NoAttribute => libc::ENODATA,
            Kind::TryAgain => libc::EAGAIN,
            Kind::NotPermitted => libc::EPERM,
            Kind::AccessDenied => libc::EACCES,
            Kind::CrossDevice => libc::EXDEV,
            Kind::TooLarge => libc::EFBIG,
            Kind::Io => libc::EIO,
            Kind::Os(errno) => errno,
            Kind::Remote(kind) => ApiError::errno_of(kind),
        }
    }

    /// Expected outcomes (ENOENT from shell completion, EEXIST from `mkdir -p`) must not
    /// flood the log.
    fn default_level(self) -> Level {
        match self {
            Kind::NotFound
            | Kind::Exists
            | Kind::NotEmpty
            | Kind::NoAttribute
            | Kind::NotDir
            | Kind::IsDir => Level::DEBUG,
            Kind::ReadOnly
            | Kind::Invalid
            | Kind::NotSupported
            | Kind::NameTooLong
            | Kind::NotPermitted
            | Kind::CrossDevice => Level::INFO,
            Kind::Remote(ApiErrorKind::NotFound) => Level::DEBUG,
            Kind::Remote(
                ApiErrorKind::Conflict | ApiErrorKind::NameTaken | ApiErrorKind::InvalidInput,
            ) => Level::INFO,
            _ => Level::WARN,
        }
    }
}

#[derive(Debug)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
    pub source: Option<anyhow::Error>,
    pub level: Level,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
            level: kind.default_level(),
        }
    }

    /// The errno for the kernel.
    pub fn errno(&self) -> i32 {
        self.kind.errno()
    }

    pub fn with_source(mut self, source: impl Into<anyhow::Error>) -> Self {
        self.source = Some(source.into());
        self
    }

    pub fn with_level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    /// Wraps an API failure with what the filesystem was doing (`context`).
    pub fn api(context: impl fmt::Display, err: ApiError) -> Self {
        Error::new(Kind::Remote(err.kind), format!("{context}: {err}")).with_source(err)
    }

    pub fn io(context: impl fmt::Display, err: std::io::Error) -> Self {
        let kind = err.raw_os_error().map_or(Kind::Io, Kind::Os);
        Error::new(kind, format!("{context}: {err}"))
            .with_source(err)
            .with_level(Level::WARN)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (errno {})", self.message, self.errno())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// `err!(NotFound, "no entry {name:?}")`: builds an [`Error`] of that [`Kind`] with a
/// formatted message.
#[macro_export]
macro_rules! err {
    ($kind:ident, $($arg:tt)*) => {
        $crate::fs::error::Error::new($crate::fs::error::Kind::$kind, format!($($arg)*))
    };
}
