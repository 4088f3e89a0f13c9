//! The filesystem core, without FUSE types: it can be driven and tested alone.
//!
//! - [`filesystem`]: `MediaFs`, the operation entry points, a few lines each;
//! - [`assembly`]: [`Core::build`], the one constructor of the core; [`config`]: its
//!   per-layer settings;
//! - [`superblock`]: listings and namespace transactions (mkdir, unlink, rmdir, rename)
//!   over [`namespace`], the inode tree with lookup counts and `forget`;
//! - [`entry`]: the core's own entry type, converted once from the API's wire types;
//! - [`attr`] and [`xattr`]: attributes and extended attributes of an entry;
//! - [`name_taken`]: overwrites and renames onto a name on a service with unique names;
//! - [`names`]: remote names ↔ POSIX names, escaping and the duplicate rule;
//! - [`files`] and [`handles`]: open files and the handle table; [`process`]: which
//!   process a close comes from; [`readers`]: open
//!   readers per remote file (a replaced file is deleted after its last reader);
//! - [`read`]: the read path: shared LRU block cache, sequential prefetch, signed-URL refresh;
//! - [`tempname`]: the temporary-file names of saves through a rename;
//! - [`write`]: the write path: staging files, uploads, the pending area and its recovery;
//! - [`error`]: the one error type (errno + message + source + log level).

pub mod assembly;
pub mod attr;
pub mod config;
pub mod entry;
pub mod error;
pub mod files;
pub mod filesystem;
pub mod handles;
pub mod local_attrs;
pub mod name_taken;
pub mod names;
pub mod namespace;
pub mod process;
pub mod read;
pub mod readers;
pub mod superblock;
pub mod tempname;
pub mod write;
pub mod xattr;

#[cfg(test)]
mod tests;

pub use assembly::Core;
pub use config::{CoreConfig, FsConfig};
pub use error::{Error, Result};
