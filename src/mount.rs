//! The mount's lifecycle: flags, the embedded server when no remote is given, the
//! background daemon with its readiness handshake, signals, and a clean unmount.

use std::fs::File;
use std::io::{BufRead, Write};
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use clap::Args;
use sha2::{Digest, Sha256};
use tracing::{debug, error, info, warn};

use crate::api::{ClientConfig, HttpClient, MediaClient};
use crate::control;
use crate::fs::read::ReadConfig;
use crate::fs::write::WriteConfig;
use crate::fs::{Core, CoreConfig, FsConfig};
use crate::fuse::FuseFs;
use crate::server::{self, parse_size, ServerConfig};
use crate::stats::{display_url, CountingClient, Sources, Stats};

/// Flags of `mediafs mount`.
#[derive(Args, Debug, Clone)]
pub struct MountArgs {
    /// Empty directory to mount the library on.
    pub mountpoint: PathBuf,

    /// Media Manager API to mount, e.g. https://apigw.klinkcx.com. Without it, mediafs
    /// starts its embedded server on a local library (see --data-dir).
    #[arg(long, env = "MEDIAFS_API_URL")]
    pub api_url: Option<String>,

    /// File holding the API token (the token can also come from MEDIAFS_TOKEN). Never
    /// pass a token on the command line: other users can read it there.
    #[arg(long)]
    pub token_file: Option<PathBuf>,

    /// Mount read-only: every modifying call answers EROFS.
    #[arg(long)]
    pub read_only: bool,

    /// Stay attached to the terminal (for containers and systemd) instead of returning
    /// once the mount is ready.
    #[arg(long, short = 'f')]
    pub foreground: bool,

    /// Let other users (not only you and root) access the mount, as the modes and owners
    /// shown allow (the kernel checks them: `default_permissions`). Needs
    /// `user_allow_other` in /etc/fuse.conf when not run as root.
    #[arg(long)]
    pub allow_other: bool,

    /// Mount over a directory that has entries (they are hidden until unmount). Refused
    /// by default, as rclone does: a mount that hides files is easy to mistake for loss.
    #[arg(long)]
    pub allow_non_empty: bool,

    /// Permission bits shown for files (octal), e.g. 640 to share read-only with --gid's
    /// group under --allow-other.
    #[arg(long, value_name = "OCTAL", default_value = "644", value_parser = parse_mode)]
    pub file_mode: u16,

    /// Permission bits shown for directories (octal), e.g. 750.
    #[arg(long, value_name = "OCTAL", default_value = "755", value_parser = parse_mode)]
    pub dir_mode: u16,

    /// Owner shown for all files (default: you).
    #[arg(long)]
    pub uid: Option<u32>,

    /// Group shown for all files (default: your group).
    #[arg(long)]
    pub gid: Option<u32>,

    /// Memory for file blocks, cached and being fetched, shared by all open files: bytes or
    /// with a K/M/G suffix.
    #[arg(long, default_value = "256M")]
    pub cache_size: String,

    /// Seconds a directory listing is trusted before it is fetched again; remote changes
    /// made by others show up after at most this long (SIGHUP drops all caches at once).
    #[arg(long, default_value_t = 30)]
    pub dir_ttl: u64,

    /// Seconds the kernel may cache names and attributes.
    #[arg(long, default_value_t = 1)]
    pub attr_ttl: u64,

    /// Library directory of the embedded server (used when no --api-url is given).
    /// Default: the user's data directory, e.g. ~/.local/share/mediafs/library.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,

    /// Directory for staged writes and pending uploads (kept private: 0700). Default: the
    /// user's cache directory, one subdirectory per library.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,

    /// With the embedded server (no --api-url): make it speak another plausible shape of
    /// the API, to try mediafs against it (names as for `mediafs serve --api-variant`; see
    /// docs/API-VARIANTS.md).
    #[arg(
        long = "api-variant",
        value_name = "NAME[,NAME…]",
        value_delimiter = ','
    )]
    pub api_variants: Vec<String>,

    /// How long an upload is retried before close() reports the failure (the data then
    /// waits in the pending area and is retried in the background), in seconds.
    #[arg(long, default_value_t = 60)]
    pub upload_retry_secs: u64,

    /// How long the upload of a new file with a temporary name (rsync's `.a.jpg.XXXXXX`,
    /// `sed -i`'s `sedXXXXXX`, `*.tmp`, ...) waits after close for the rename that gives it
    /// its final name, in seconds. The rename then uploads it once, under the final name.
    /// fsync() uploads at once; 0 turns the wait off.
    #[arg(long, default_value_t = 5)]
    pub temp_upload_delay: u64,

    /// How long unmount waits for uploads still in progress, in seconds.
    #[arg(long, default_value_t = 30)]
    pub unmount_timeout: u64,

    /// Log file (default: standard error with --foreground, mediafs.log in the cache dir
    /// in the background).
    #[arg(long)]
    pub log_file: Option<PathBuf>,

    /// Serve Prometheus metrics (the counters of `mediafs status`) over HTTP at
    /// ADDR:PORT/metrics, e.g. 127.0.0.1:9187.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_addr: Option<std::net::SocketAddr>,

    /// The mount's source as mount(8) shows it (set by the mount.mediafs helper).
    #[arg(long, hide = true)]
    pub fsname: Option<String>,

    /// Programs on the mount cannot be executed (mount option noexec).
    #[arg(long, hide = true)]
    pub noexec: bool,
}

/// Permission bits in octal (`644`, `0750`).
fn parse_mode(text: &str) -> Result<u16, String> {
    u16::from_str_radix(text, 8)
        .ok()
        .filter(|m| *m <= 0o777)
        .ok_or_else(|| format!("not permission bits in octal (e.g. 640): {text:?}"))
}

/// Where the token comes from: the file, else MEDIAFS_TOKEN.
fn read_token(args: &MountArgs) -> anyhow::Result<String> {
    if let Some(path) = &args.token_file {
        let t = std::fs::read_to_string(path)
            .with_context(|| format!("reading token file {}", path.display()))?;
        let t = t.trim().to_string();
        if t.is_empty() {
            bail!("token file {} is empty", path.display());
        }
        return Ok(t);
    }
    match std::env::var("MEDIAFS_TOKEN") {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => bail!("no API token: pass --token-file FILE or set MEDIAFS_TOKEN"),
    }
}

fn default_data_dir() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("mediafs")
        .join("library")
}

/// The cache dir of one library: pending uploads of a library are found again by the next
/// mount of the same library.
fn default_cache_dir(library_key: &str) -> PathBuf {
    let digest = hex::encode(&Sha256::digest(library_key.as_bytes())[..8]);
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("mediafs")
        .join(digest)
}

fn check_mountpoint(path: &Path, allow_non_empty: bool) -> anyhow::Result<PathBuf> {
    let abs = control::absolute_mountpoint(path)
        .map_err(|e| anyhow!("mountpoint {}: {e}", path.display()))?;
    if is_dead_mount(&abs) {
        clear_dead_mount(&abs)?;
    }
    let meta =
        std::fs::metadata(&abs).map_err(|e| anyhow!("mountpoint {}: {e}", path.display()))?;
    if !meta.is_dir() {
        bail!("mountpoint {} is not a directory", path.display());
    }
    let abs = std::fs::canonicalize(&abs)?;
    if is_mounted(&abs) {
        bail!(
            "{} is already a mount point (busy): unmount it first",
            abs.display()
        );
    }
    if !allow_non_empty && std::fs::read_dir(&abs)?.next().is_some() {
        bail!(
            "mountpoint {} is not empty: its entries would be hidden while mounted \
             (pass --allow-non-empty, or the mount option nonempty, to mount anyway)",
            abs.display()
        );
    }
    Ok(abs)
}

/// A FUSE mount whose daemon died: every request fails with ENOTCONN. statfs always asks
/// the daemon (a stat may be answered from the kernel's attribute cache).
fn is_dead_mount(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    let failed = unsafe { libc::statfs(c.as_ptr(), &mut buf) } != 0;
    // ECONNABORTED: the request was in flight when the daemon's end closed.
    failed
        && matches!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ENOTCONN | libc::ECONNABORTED)
        )
}

/// A mount whose daemon died without auto-unmount answers ENOTCONN ("Transport endpoint
/// is not connected") to everything: detach it so the path can be used again.
fn clear_dead_mount(path: &Path) -> anyhow::Result<()> {
    match umount(path, true) {
        Ok(()) => {
            eprintln!(
                "mediafs: {} was a dead mount (\"Transport endpoint is not connected\": its daemon had died); unmounted it",
                path.display()
            );
            Ok(())
        }
        Err(e) => bail!(
            "{} is a dead mount (\"Transport endpoint is not connected\": its daemon died) and could not be unmounted: {e}; run `fusermount3 -uz {}` (or, as root, `umount -l {}`)",
            path.display(),
            path.display(),
            path.display()
        ),
    }
}

/// Starts `mediafs __crash-guard MOUNTPOINT` with a pipe as its stdin. The guard (see
/// [`crash_guard`]) outlives a killed daemon and unmounts what it left behind.
fn spawn_crash_guard(mountpoint: &Path) -> std::io::Result<std::process::ChildStdin> {
    use std::os::unix::process::CommandExt;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("__crash-guard")
        .arg(mountpoint)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // Its own process group: a Ctrl-C or a SIGTERM to the daemon's group must not end
        // the guard before the daemon.
        .process_group(0)
        .spawn()?;
    let stdin = child.stdin.take().expect("piped stdin");
    // Reaped by whoever inherits it; the daemon never waits for it.
    std::mem::forget(child);
    Ok(stdin)
}

/// `mediafs __crash-guard MOUNTPOINT` (internal): waits until the daemon that started it
/// is gone (its stdin closes), then detaches the mount if the daemon left it dead. A clean
/// unmount leaves nothing to do.
pub fn crash_guard(mountpoint: &Path) -> i32 {
    let mut sink = [0u8; 64];
    use std::io::Read;
    let mut stdin = std::io::stdin();
    while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
    // A killed process may close this pipe before its /dev/fuse descriptor: until that
    // one closes too, the mount still looks alive. Watch it for a while.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if is_dead_mount(mountpoint) {
            let _ = umount(mountpoint, true);
            break;
        }
        if !is_mounted(mountpoint) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    0
}

fn is_mounted(path: &Path) -> bool {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let want = path.to_string_lossy();
    mounts.lines().any(|l| {
        l.split_whitespace()
            .nth(1)
            .is_some_and(|m| m.replace("\\040", " ") == want)
    })
}

/// `mediafs mount`: returns the process exit code.
pub fn run(args: MountArgs) -> i32 {
    let mountpoint = match check_mountpoint(&args.mountpoint, args.allow_non_empty) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("mediafs: {e:#}");
            return 2;
        }
    };
    // Under mediafs's own PID 1 init the daemon must stay in the foreground: the init exits
    // (and the namespace with it) when its child does.
    if args.foreground || crate::init::under_init() {
        // Standard error, unless a log file is named (systemd and container setups do).
        if let Err(e) = crate::init_logging(args.log_file.as_deref()) {
            eprintln!("mediafs: log file: {e:#}");
            return 2;
        }
        return match serve_mount(args, mountpoint, None) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("mediafs: {e:#}");
                1
            }
        };
    }
    // Background: fork before any thread exists; the child reports readiness over a pipe.
    let mut fds = [0; 2];
    // CLOEXEC: fusermount3 (auto-unmount) outlives us and must not hold the pipe open.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        eprintln!("mediafs: pipe: {}", std::io::Error::last_os_error());
        return 1;
    }
    match unsafe { libc::fork() } {
        -1 => {
            eprintln!("mediafs: fork: {}", std::io::Error::last_os_error());
            1
        }
        0 => {
            unsafe { libc::close(fds[0]) };
            let ready = unsafe { File::from_raw_fd(fds[1]) };
            unsafe { libc::setsid() };
            let code = match serve_mount(args, mountpoint, Some(ready)) {
                Ok(()) => 0,
                Err(_) => 1,
            };
            std::process::exit(code);
        }
        child => {
            unsafe { libc::close(fds[1]) };
            let mut msg = String::new();
            let _ =
                std::io::BufReader::new(unsafe { File::from_raw_fd(fds[0]) }).read_line(&mut msg);
            if let Some(ok) = msg.strip_prefix("OK ") {
                println!("{}", ok.trim_end());
                0
            } else {
                let mut status = 0;
                unsafe { libc::waitpid(child, &mut status, 0) };
                let msg = msg
                    .strip_prefix("ERR ")
                    .unwrap_or("the daemon exited before the mount was ready");
                eprintln!("mediafs: {}", msg.trim());
                1
            }
        }
    }
}

/// Tells the waiting parent how the mount went (background mode), or prints it.
fn report(ready: &mut Option<File>, ok: Result<String, String>) {
    match ready.take() {
        Some(mut f) => {
            let line = match &ok {
                Ok(m) => format!("OK {m}\n"),
                Err(m) => format!("ERR {}\n", m.replace('\n', " ")),
            };
            let _ = f.write_all(line.as_bytes());
        }
        None => match ok {
            Ok(m) => eprintln!("{m}"),
            Err(m) => eprintln!("mediafs: {m}"),
        },
    }
}

fn serve_mount(
    args: MountArgs,
    mountpoint: PathBuf,
    mut ready: Option<File>,
) -> anyhow::Result<()> {
    let result = serve_mount_inner(&args, &mountpoint, &mut ready);
    if let Err(e) = &result {
        error!("mount failed: {e:#}");
        report(&mut ready, Err(format!("{e:#}")));
    }
    result
}

fn serve_mount_inner(
    args: &MountArgs,
    mountpoint: &Path,
    ready: &mut Option<File>,
) -> anyhow::Result<()> {
    let cache_bytes = parse_size(&args.cache_size).map_err(|e| anyhow!("--cache-size: {e}"))?;
    let library_key = match &args.api_url {
        Some(url) => url.clone(),
        None => format!(
            "embedded:{}",
            args.data_dir
                .clone()
                .unwrap_or_else(default_data_dir)
                .display()
        ),
    };
    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(|| default_cache_dir(&library_key));
    crate::private_files::ensure_dir(&cache_dir).context("cache dir")?;
    if ready.is_some() {
        let log = args
            .log_file
            .clone()
            .unwrap_or_else(|| cache_dir.join("mediafs.log"));
        crate::init_logging(Some(&log)).context("log file")?;
        redirect_stdio();
    }

    // glibc gives each thread its own malloc arena and keeps freed block buffers in them:
    // measured, the daemon then sat 90-150 MiB over --cache-size while reading. One arena
    // keeps memory near the cache size at the same throughput (BENCHMARKS.md).
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("mediafs-rt")
        .build()?;
    let handle = rt.handle().clone();

    // The remote: the given API, or the embedded server on a local library.
    let (base_url, token, embedded) = match &args.api_url {
        Some(_) if !args.api_variants.is_empty() => {
            bail!("--api-variant applies to the embedded server only (without --api-url)")
        }
        Some(url) => (url.clone(), read_token(args)?, None),
        None => {
            let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
            let token = format!("local-{}", uuid::Uuid::new_v4().simple());
            // No test hooks: nothing another local user can reach changes this server.
            let mut cfg = ServerConfig::local(data_dir.clone(), &token);
            cfg.seed_sample = true;
            cfg.variants = server::Variants::parse(&args.api_variants).map_err(|e| anyhow!(e))?;
            if !cfg.variants.is_empty() {
                info!(variant = %cfg.variants, "the embedded server speaks an API variant");
            }
            let srv = rt
                .block_on(server::start(cfg))
                .context("starting the embedded server")?;
            info!(data_dir = %data_dir.display(), url = %srv.base_url(), "embedded Media Manager server started");
            (srv.base_url(), token, Some((srv, data_dir)))
        }
    };
    let mut client_config = ClientConfig::new(base_url.clone(), token);
    // One walk of a library whose service ignores list filters serves listings as long
    // as a listing is trusted.
    client_config.whole_list_ttl = Duration::from_secs(args.dir_ttl);
    let client = Arc::new(HttpClient::new(client_config).map_err(|e| anyhow!("{e}"))?);
    rt.block_on(client.probe()).map_err(|e| match e.kind {
        crate::api::ApiErrorKind::Unauthorized => {
            anyhow!("the API rejected the token (HTTP 401): check --token-file / MEDIAFS_TOKEN")
        }
        _ => anyhow!("cannot reach the Media Manager API at {base_url}: {e}"),
    })?;
    let stats = Stats::new();
    let client: Arc<dyn MediaClient> = CountingClient::new(client, stats.clone());

    let _guard = handle.enter();
    let fs = Core::build(core_config(args, &cache_dir, cache_bytes), client)
        .map_err(|e| anyhow!("{e}"))?;
    // What `mediafs status` and --metrics-addr report on.
    let reader = fs.reader().clone();
    let uploader = fs.uploader().cloned();

    let mut options = vec![
        fuser::MountOption::FSName(args.fsname.clone().unwrap_or_else(|| "mediafs".into())),
        fuser::MountOption::Subtype("mediafs".into()),
        fuser::MountOption::NoDev,
        fuser::MountOption::NoSuid,
        fuser::MountOption::NoAtime,
        if args.read_only {
            fuser::MountOption::RO
        } else {
            fuser::MountOption::RW
        },
    ];
    if args.allow_other {
        // Other users get exactly what the modes and owners shown allow, checked by the
        // kernel; without it they could write to entries shown 0644 and owned by you.
        options.push(fuser::MountOption::DefaultPermissions);
    }
    if args.noexec {
        options.push(fuser::MountOption::NoExec);
    }
    let is_root = unsafe { libc::geteuid() } == 0;
    // auto_unmount (via fusermount3) removes the mount if the daemon dies, so a crash
    // never leaves "Transport endpoint is not connected" behind. fuser requires a non-owner
    // ACL for it; allow_other needs root or user_allow_other.
    //
    // Root without --allow-other keeps the kernel's owner-only check: fuser's root ACL would
    // mean allow_other in the kernel plus a check in the daemon, and the kernel answers
    // stat() from its attribute cache without asking the daemon, so other users could see
    // names and sizes the owner just used. A guard process unmounts after a crash instead.
    let acl = if args.allow_other {
        fuser::SessionACL::All
    } else {
        fuser::SessionACL::Owner
    };
    let guard_crash = is_root
        && acl == fuser::SessionACL::Owner
        && std::env::var_os("MEDIAFS_NO_CRASH_GUARD").is_none();
    if acl != fuser::SessionACL::Owner && which("fusermount3") {
        options.push(fuser::MountOption::AutoUnmount);
    } else {
        if is_root {
            // The mount syscall directly: fuser leaves the subtype to fusermount3, so pass
            // it to the kernel ourselves; the type then reads fuse.mediafs either way.
            options.push(fuser::MountOption::CUSTOM("subtype=mediafs".into()));
        }
        if !guard_crash {
            warn!("auto-unmount unavailable (needs root, or fusermount3 and --allow-other): a crash leaves a dead mount");
        }
    }
    let mut config = fuser::Config::default();
    config.mount_options = options;
    config.acl = acl;
    config.n_threads = Some(4);
    config.clone_fd = true;

    let attr_ttl = Duration::from_secs(args.attr_ttl);
    let notifier = Arc::new(std::sync::OnceLock::new());
    let mut session = fuser::Session::new(
        FuseFs::new(fs.clone(), handle.clone(), attr_ttl, notifier.clone()),
        mountpoint,
        &config,
    )
    .with_context(|| format!("mounting on {}", mountpoint.display()))?;
    let _ = notifier.set(session.notifier());
    let mut unmounter = session.unmount_callable();
    let bg = session.spawn().context("starting the FUSE session")?;
    // Held open for the daemon's lifetime: the guard sees its end when the daemon dies.
    let _crash_guard = if guard_crash {
        match spawn_crash_guard(mountpoint) {
            Ok(g) => Some(g),
            Err(e) => {
                warn!("no crash guard ({e}): a crash leaves a dead mount");
                None
            }
        }
    } else {
        None
    };

    let source = match &embedded {
        Some((_, dir)) => format!("the local library in {}", dir.display()),
        None => base_url.clone(),
    };
    wait_answering(mountpoint)?;
    raise_readahead(mountpoint, READ_AHEAD_KIB);
    let sources = Arc::new(Sources {
        stats,
        reader,
        uploader,
        mountpoint: mountpoint.to_path_buf(),
        remote: match &embedded {
            Some((_, dir)) => format!(
                "{} (embedded server, library {})",
                display_url(&base_url),
                dir.display()
            ),
            None => display_url(&base_url),
        },
        read_only: args.read_only,
        cache_capacity: cache_bytes,
    });
    // Without the status socket the mount still works: say so and go on.
    let listener = {
        let _rt = handle.enter();
        control::Listener::start(sources.clone())
            .inspect_err(|e| warn!("no status socket (`mediafs status` will not answer): {e:#}"))
            .ok()
    };
    if let Some(addr) = args.metrics_addr {
        let bound = rt.block_on(crate::metrics::serve(addr, sources.clone()))?;
        info!(%bound, "Prometheus metrics at /metrics");
    }
    info!(mountpoint = %mountpoint.display(), %source, "mounted");
    crate::notify::ready(&format!("mounted {source} on {}", mountpoint.display()));
    report(
        ready,
        Ok(format!(
            "mediafs: mounted {source} on {}",
            mountpoint.display()
        )),
    );

    // Signals: INT/TERM unmount, HUP drops caches. An external unmount ends the session.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let _ = bg.join();
        let _ = done_tx.send(());
    });
    let fs_sig = fs.clone();
    let mp = mountpoint.to_path_buf();
    rt.block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).expect("signal handler");
        let mut int = signal(SignalKind::interrupt()).expect("signal handler");
        let mut hup = signal(SignalKind::hangup()).expect("signal handler");
        tokio::pin!(done_rx);
        loop {
            tokio::select! {
                _ = term.recv() => { info!("SIGTERM: unmounting"); break; }
                _ = int.recv() => { info!("SIGINT: unmounting"); break; }
                _ = hup.recv() => fs_sig.drop_caches(),
                _ = &mut done_rx => {
                    crate::notify::stopping();
                    info!("unmounted");
                    return;
                }
            }
        }
        crate::notify::stopping();
        unmount_own(&mp, &mut unmounter);
        // The session ends once the kernel lets go of the mount: at once, or when the last
        // open file closes (detached busy mount). A second signal stops waiting for those.
        tokio::select! {
            _ = &mut done_rx => info!("unmounted"),
            _ = term.recv() => warn!("second SIGTERM: exiting without waiting for open files"),
            _ = int.recv() => warn!("second SIGINT: exiting without waiting for open files"),
        }
    });
    if let Some(l) = listener {
        l.close();
    }
    let pending = rt.block_on(fs.shutdown(Duration::from_secs(args.unmount_timeout)));
    if !pending.is_empty() {
        let list: Vec<String> = pending
            .iter()
            .map(|p| format!("{} ({} bytes) at {}", p.name, p.size, p.data_path.display()))
            .collect();
        warn!(
            count = pending.len(),
            "uploads still pending; they are retried at the next mount of this library: {}",
            list.join("; ")
        );
        eprintln!(
            "mediafs: {} upload(s) still pending, kept in {} and retried at the next mount: {}",
            pending.len(),
            cache_dir.join("pending").display(),
            list.join("; ")
        );
    }
    if let Some((srv, _)) = embedded {
        rt.block_on(srv.shutdown());
    }
    rt.shutdown_timeout(Duration::from_secs(2));
    Ok(())
}

/// The settings of each layer of the core, from the mount flags.
fn core_config(args: &MountArgs, cache_dir: &Path, cache_bytes: u64) -> CoreConfig {
    let write = (!args.read_only).then(|| {
        let mut wc = WriteConfig::new(cache_dir);
        wc.upload_retry_for = Duration::from_secs(args.upload_retry_secs);
        wc.shutdown_timeout = Duration::from_secs(args.unmount_timeout);
        wc.temp_upload_delay = Duration::from_secs(args.temp_upload_delay);
        wc
    });
    CoreConfig {
        fs: FsConfig {
            uid: args.uid.unwrap_or_else(|| unsafe { libc::getuid() }),
            gid: args.gid.unwrap_or_else(|| unsafe { libc::getgid() }),
            file_mode: args.file_mode,
            dir_mode: args.dir_mode,
            dir_ttl: Duration::from_secs(args.dir_ttl),
            read_only: args.read_only,
            attrs_db: Some(cache_dir.join("attrs.db")),
        },
        read: ReadConfig::with_cache_bytes(cache_bytes),
        write,
    }
}

/// Waits until the mount answers (a stat of its root served by our own FUSE threads), so
/// readiness is reported for a mount that works, not one that is merely set up.
fn wait_answering(mountpoint: &Path) -> anyhow::Result<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    let mp = mountpoint.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::metadata(&mp));
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => bail!(
            "the new mount on {} does not answer: {e}",
            mountpoint.display()
        ),
        Err(_) => bail!(
            "the new mount on {} did not answer within 60 s",
            mountpoint.display()
        ),
    }
}

/// Kernel readahead of the mount, in KiB. A FUSE mount starts at 128 KiB, so a sequential
/// reader reaches the daemon as 128 KiB requests, each a round trip; with a larger window
/// the kernel sends requests of up to `max_pages` (1 MiB here, from `max_write`) and keeps
/// several in flight (BENCHMARKS.md).
const READ_AHEAD_KIB: u64 = 8192;

/// Raises the readahead of the mount's backing device info. Only root may: others keep
/// the kernel's default (slower sequential reads, nothing else changes).
fn raise_readahead(mountpoint: &Path, kib: u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(mountpoint) else {
        return;
    };
    let dev = meta.dev();
    let path = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    let current = std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    if current.is_some_and(|c| c >= kib) {
        return;
    }
    match std::fs::write(&path, format!("{kib}\n")) {
        Ok(()) => debug!(path, kib, "raised the mount's readahead"),
        Err(e) => debug!(path, error = %e, "could not raise the mount's readahead"),
    }
}

fn which(prog: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(prog).is_file()))
}

/// The daemon has no terminal: stdin/stdout/stderr go to /dev/null (logs go to the log file).
fn redirect_stdio() {
    if let Ok(devnull) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        use std::os::fd::AsRawFd;
        for fd in 0..3 {
            unsafe { libc::dup2(devnull.as_raw_fd(), fd) };
        }
    }
}

/// Our own unmount at SIGTERM/SIGINT. As root the umount2 syscall does it (fuser's
/// unmounter relies on fusermount3, absent in most container images); else fusermount3. A
/// busy mount is detached: open files are served until they close.
fn unmount_own(mp: &Path, unmounter: &mut fuser::SessionUnmounter) {
    let result = match umount(mp, false) {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            info!("mount busy (open files): detaching it; open files are served until they close");
            umount(mp, true)
        }
        // Already gone (unmounted by someone else meanwhile).
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(()),
        other => other,
    };
    if let Err(e) = result {
        warn!(
            "unmounting {}: {e}; trying the FUSE library's unmounter",
            mp.display()
        );
        if let Err(e) = unmounter.unmount() {
            error!("cannot unmount {}: {e}", mp.display());
        }
    }
}

/// Unmounts `mountpoint` (lazily: detached now, gone when the last open file closes).
fn umount(mountpoint: &Path, lazy: bool) -> std::io::Result<()> {
    let c = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    if unsafe { libc::umount2(c.as_ptr(), flags) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EPERM) {
        return Err(err);
    }
    // Not root: fusermount3 may unmount FUSE mounts of the calling user.
    let mut cmd = std::process::Command::new("fusermount3");
    cmd.arg("-u");
    if lazy {
        cmd.arg("-z");
    }
    match cmd.arg(mountpoint).status() {
        Ok(s) if s.success() => Ok(()),
        Ok(_) => Err(err),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            "only root may unmount it, and fusermount3 (package fuse3), which lets its owner do it, is not installed",
        )),
        Err(e) => Err(e),
    }
}

/// `mediafs unmount MOUNTPOINT`: the daemon then waits for uploads in progress and exits.
/// A dead mount (its daemon died) is detached.
pub fn unmount(mountpoint: &Path) -> i32 {
    let dead = is_dead_mount(mountpoint);
    // Asked before the unmount: afterwards the daemon may no longer answer.
    let status = if dead {
        None
    } else {
        control::query(mountpoint).ok()
    };
    let unfinished: Vec<_> = status
        .iter()
        .flat_map(|s| s.unfinished())
        .map(|(u, _)| u)
        .collect();
    match umount(mountpoint, dead) {
        Ok(()) => {
            if dead {
                eprintln!(
                    "mediafs: {} was a dead mount (\"Transport endpoint is not connected\": its daemon had died); unmounted it",
                    mountpoint.display()
                );
            }
            if !unfinished.is_empty() {
                let list: Vec<String> = unfinished
                    .iter()
                    .map(|u| match &u.data_path {
                        Some(p) => format!("{} ({} bytes, at {})", u.name, u.size, p.display()),
                        None => format!("{} ({} bytes)", u.name, u.size),
                    })
                    .collect();
                eprintln!(
                    "mediafs: {} upload(s) not on the service yet: {}. The daemon keeps trying \
                     for up to --unmount-timeout seconds; what is left waits in the pending \
                     area and is uploaded at the next mount of this library (its log says which).",
                    unfinished.len(),
                    list.join("; ")
                );
            }
            0
        }
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            eprintln!(
                "mediafs: {} is busy (a process has a file or directory open there)",
                mountpoint.display()
            );
            1
        }
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            eprintln!("mediafs: {} is not mounted", mountpoint.display());
            1
        }
        Err(e) => {
            eprintln!("mediafs: unmount {}: {e}", mountpoint.display());
            1
        }
    }
}
