//! `mediafs`: mount a Media Manager library as a directory tree, or serve one.
//! Invoked as `mount.mediafs` (a link to the binary), it is mount(8)'s helper.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "mediafs", version, about = "Mount a Media Manager library as a directory tree", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Internal: unmounts MOUNTPOINT if the daemon that started it dies.
    #[command(name = "__crash-guard", hide = true)]
    CrashGuard { mountpoint: PathBuf },
    /// Mount a library. Without --api-url, mounts a local library served by the embedded server.
    Mount(mediafs::mount::MountArgs),
    /// Unmount a mediafs mount (the daemon finishes uploads in progress, then exits). Also
    /// clears a dead mount ("Transport endpoint is not connected").
    Unmount {
        /// The mountpoint.
        mountpoint: PathBuf,
    },
    /// Show a mount's state: remote, uptime, pending uploads, cache, request and error
    /// counts. Exits 1 when no daemon answers for the mountpoint.
    Status {
        /// The mountpoint.
        mountpoint: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Run the embedded Media Manager server (the same API, on a local library).
    Serve(mediafs::server::ServeArgs),
    /// Report which shape of the API a service speaks (read-only unless --write).
    Probe(mediafs::probe::ProbeArgs),
    /// Print a shell completion script, e.g. `mediafs completions bash > /etc/bash_completion.d/mediafs`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print a man page (roff): `mediafs man > mediafs.1`, and one per subcommand with all
    /// its flags, e.g. `mediafs man mount > mediafs-mount.1`.
    Man {
        /// The subcommand (mount, unmount, status, serve, probe, completions).
        subcommand: Option<String>,
    },
}

fn main() -> ExitCode {
    // First, before any thread exists.
    mediafs::init::become_init_if_pid1();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if mediafs::helper::invoked_as_helper(&argv) {
        return exit(match mediafs::helper::parse(&argv[1..]) {
            Ok(mediafs::helper::Helper::Mount(args)) => mediafs::mount::run(*args),
            Ok(mediafs::helper::Helper::Fake) => 0,
            Err(e) => {
                eprintln!("mount.mediafs: {e}");
                // mount(8)'s exit code for a usage error.
                1
            }
        });
    }
    let cli = Cli::parse();
    if matches!(
        cli.command,
        Command::Status { .. }
            | Command::Completions { .. }
            | Command::Man { .. }
            | Command::Probe(_)
    ) {
        // Commands that only print end quietly when their reader goes (`| head`), as other
        // command-line tools do. Not the daemons: a peer closing a socket must not kill them.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let code = match cli.command {
        Command::Mount(args) => mediafs::mount::run(args),
        Command::Unmount { mountpoint } => mediafs::mount::unmount(&mountpoint),
        Command::Probe(args) => mediafs::probe::run(args),
        Command::Status { mountpoint, json } => mediafs::control::status_command(&mountpoint, json),
        Command::Completions { shell } => {
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "mediafs",
                &mut std::io::stdout(),
            );
            0
        }
        Command::CrashGuard { mountpoint } => mediafs::mount::crash_guard(&mountpoint),
        Command::Man { subcommand } => {
            let top = Cli::command();
            let page = match subcommand {
                None => top,
                Some(name) => match top.find_subcommand(&name) {
                    // Named as the top page refers to it: mediafs-mount(1). (clap wants a
                    // static name; this process prints one page and exits.)
                    Some(sub) => {
                        let full: &'static str = Box::leak(format!("mediafs-{name}").into());
                        sub.clone().name(full)
                    }
                    None => {
                        eprintln!("mediafs: no subcommand {name:?}");
                        return ExitCode::from(2);
                    }
                },
            };
            match clap_mangen::Man::new(page).render(&mut std::io::stdout()) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("mediafs: {e}");
                    1
                }
            }
        }
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
    exit(code)
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(code as u8)
}
