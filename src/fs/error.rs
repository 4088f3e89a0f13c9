//! The filesystem core's one error type: an errno for the kernel, a message for the log,
//! the source chain, and the level to log it at (expected errors such as ENOENT from shell
//! completion must not flood the log).

use std::fmt;

use tracing::Level;

use crate::api::{ApiError, ApiErrorKind};

#[derive(Debug)]
pub struct Error {
    pub errno: i32,
    pub message: String,
    pub source: Option<anyhow::Error>,
    pub level: Level,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(errno: i32, message: impl Into<String>) -> Self {
        let level = default_level(errno);
        Error {
            errno,
            message: message.into(),
            source: None,
            level,
        }
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
        let errno = err.errno();
        let level = match err.kind {
            ApiErrorKind::NotFound => Level::DEBUG,
            ApiErrorKind::Conflict | ApiErrorKind::InvalidInput => Level::INFO,
            _ => Level::WARN,
        };
        Error {
            errno,
            message: format!("{context}: {err}"),
            source: Some(err.into()),
            level,
        }
    }

    pub fn io(context: impl fmt::Display, err: std::io::Error) -> Self {
        let errno = err.raw_os_error().unwrap_or(libc::EIO);
        Error::new(errno, format!("{context}: {err}"))
            .with_source(err)
            .with_level(Level::WARN)
    }
}

fn default_level(errno: i32) -> Level {
    match errno {
        libc::ENOENT
        | libc::EEXIST
        | libc::ENOTEMPTY
        | libc::ENODATA
        | libc::ENOTDIR
        | libc::EISDIR => Level::DEBUG,
        libc::EROFS
        | libc::EINVAL
        | libc::ENOTSUP
        | libc::ENAMETOOLONG
        | libc::EPERM
        | libc::EXDEV => Level::INFO,
        _ => Level::WARN,
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (errno {})", self.message, self.errno)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// `err!(libc::ENOENT, "no entry {name:?}")`: builds an [`Error`] with a formatted message.
#[macro_export]
macro_rules! err {
    ($errno:expr, $($arg:tt)*) => {
        $crate::fs::error::Error::new($errno, format!($($arg)*))
    };
}
