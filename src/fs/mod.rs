//! The filesystem core, without FUSE types: it can be driven and tested alone.
//!
//! - [`error`]: the one error type (errno + message + source + log level);
//! - [`names`]: remote names ↔ POSIX names, escaping and the duplicate rule;
//! - [`read`]: the read path: shared LRU block cache, sequential prefetch, signed-URL refresh;
//! - [`write`]: the write path: staging files, uploads, the pending area and its recovery.

pub mod error;
pub mod filesystem;
pub mod local_attrs;
pub mod names;
pub mod namespace;
pub mod read;
pub mod write;

#[cfg(test)]
mod tests;

pub use error::{Error, Result};
