//! `mediafs`: mount a Media Manager library as a directory tree, or serve one.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "mediafs", version, about = "Mount a Media Manager library as a directory tree", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Mount a library. Without --api-url, mounts a local library served by the embedded server.
    Mount(mediafs::mount::MountArgs),
    /// Unmount a mediafs mount (the daemon finishes uploads in progress, then exits).
    Unmount {
        /// The mountpoint.
        mountpoint: PathBuf,
    },
    /// Run the embedded Media Manager server (the same API, on a local library).
    Serve(mediafs::server::ServeArgs),
    /// Report which shape of the API a service speaks (read-only unless --write).
    Probe(mediafs::probe::ProbeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Mount(args) => mediafs::mount::run(args),
        Command::Unmount { mountpoint } => mediafs::mount::unmount(&mountpoint),
        Command::Probe(args) => mediafs::probe::run(args),
        Command::Serve(args) => {
            let _ = mediafs::init_logging(None);
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("mediafs: {e}");
                    return ExitCode::from(1);
                }
            };
            match rt.block_on(mediafs::server::run(args)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("mediafs: {e:#}");
                    1
                }
            }
        }
    };
    ExitCode::from(code as u8)
}
