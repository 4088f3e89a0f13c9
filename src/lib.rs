//! mediafs: mount a Media Manager library as a directory tree.
//!
//! Layers, top to bottom (see README.md and SEMANTICS.md):
//! - [`fuse`]: the `fuser::Filesystem` glue, a few lines per operation;
//! - [`fs`]: the filesystem core (namespace, read path, write path), no FUSE types;
//! - [`api`]: the Media Manager client trait and its HTTP implementation;
//! - [`server`]: the embedded Media Manager server (tests and the default mount).

pub mod api;
pub mod fs;
pub mod fuse;
pub mod mount;
pub mod server;
