//! mediafs: mount a Media Manager library as a directory tree.
//!
//! Layers, top to bottom (see README.md and SEMANTICS.md):
//! - [`fuse`]: the `fuser::Filesystem` glue, a few lines per operation;
//! - [`fs`]: the filesystem core (entry points, superblock and namespace, open files,
//!   read path, write path), no FUSE types;
//! - [`api`]: the Media Manager client trait and its HTTP implementation;
//! - [`server`]: the embedded Media Manager server (tests and the default mount);
//! - [`probe`]: `mediafs probe`, which reports the shape of a service's API.

pub mod api;
pub mod control;
pub mod fs;
pub mod fuse;
pub mod helper;
pub mod init;
pub mod metrics;
pub mod mount;
pub mod notify;
pub mod private_files;
pub mod probe;
pub mod server;
pub mod stats;

/// Logs go to stderr (foreground) or to `file` (background daemon). `RUST_LOG` or
/// `MEDIAFS_LOG` set the filter (default [`DEFAULT_LOG_FILTER`]). The file is created 0600 and never
/// through a symbolic link ([`private_files::open_append`]); an error says why it was
/// refused. Without a file, this cannot fail.
/// `info`, except fuser's mount module: when its session ends it unmounts once more, and
/// after mediafs's own unmount (every SIGTERM, SIGINT or `mediafs unmount`) that second
/// try warns "Unmount failed: Invalid argument", which is expected and misleading.
pub const DEFAULT_LOG_FILTER: &str = "info,fuser::mnt=error";

pub fn init_logging(file: Option<&std::path::Path>) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("MEDIAFS_LOG")
        .ok()
        .map(EnvFilter::new)
        .unwrap_or_else(|| {
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_LOG_FILTER))
        });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let opened = file.map(private_files::open_append).transpose()?;
    let _ = match opened {
        Some(f) => builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(f))
            .try_init(),
        None => builder.with_writer(std::io::stderr).try_init(),
    };
    Ok(())
}
