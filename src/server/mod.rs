//! The embedded Media Manager server: the API of `media-manager-api.md` (documented and
//! assumed parts) served by axum on loopback, with SQLite metadata, blob files, signed CDN
//! URLs with Range support, fault injection and request counters for tests.
//!
//! Layout: [`db`] (SQLite metadata), [`blobs`] (blob files), [`upload`] (the streaming
//! Create File body parser), [`cdn`] (signed URLs, byte serving), [`faults`] (fault
//! injection, request statistics, per-request tracing), [`routes`] (API handlers),
//! [`sample`] (the starter library).

mod blobs;
mod cdn;
mod connections;
mod db;
mod error;
mod faults;
mod fields;
mod routes;
mod sample;
mod upload;
mod variants;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use connections::{effective_max_connections, ConnLimits};
pub use faults::{FaultConfig, Stats};
pub use variants::{Variant, Variants};

/// Serve a local Media Manager library over HTTP: the ten API operations under
/// /api/v1/media-manager (bearer token), signed file URLs under /cdn with Range support,
/// and with --test-hooks, request counters and fault injection under /_emulator (bearer
/// token too).
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address to listen on. Keep it on loopback: the server has no TLS.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8787")]
    pub listen: SocketAddr,

    /// Library directory: `library.db` (metadata) and `blobs/` (file contents).
    /// Default: the user's data directory, e.g. ~/.local/share/mediafs/library.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Accepted bearer token (repeatable). Prefer --token-file or the environment
    /// variable MEDIAFS_SERVER_TOKENS (comma-separated): argv is visible to other users.
    /// With no token from any source, a random one is generated and saved in
    /// `<data-dir>/generated-token` (mode 0600).
    #[arg(
        long = "token",
        value_name = "TOKEN",
        env = "MEDIAFS_SERVER_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub tokens: Vec<String>,

    /// File holding accepted bearer tokens, one per line (blank lines and `#` comments ignored).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Lifetime of the signed file URLs, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub url_ttl: u64,

    /// Largest accepted upload (decoded size): bytes, or with a K/M/G/T suffix (powers of 1024).
    #[arg(long, value_name = "SIZE", default_value = "5G")]
    pub max_upload_size: String,

    /// Serve whole files (200) even when a Range header asks for part of one, like a CDN
    /// without range support. For client testing.
    #[arg(long)]
    pub ignore_range: bool,

    /// Seed a small sample library when the library database is new.
    #[arg(long)]
    pub sample: bool,

    /// Fault injection: delay every matching request by this many milliseconds.
    #[arg(long, value_name = "MS")]
    pub fault_latency_ms: Option<u64>,

    /// Fault injection: fraction (0..1) of matching requests answered 503.
    #[arg(long, value_name = "RATE")]
    pub fault_error_rate: Option<f64>,

    /// Fault injection: fraction (0..1) of matching requests answered 429 with Retry-After: 1.
    #[arg(long = "fault-429-rate", value_name = "RATE")]
    pub fault_429_rate: Option<f64>,

    /// Fault injection: fraction (0..1) of matching responses cut off mid-body
    /// (headers and part of the body are sent, then the connection is dropped).
    #[arg(long, value_name = "RATE")]
    pub fault_drop_rate: Option<f64>,

    /// Serve the test hooks under /_emulator (request counters, fault injection at run
    /// time). They need the bearer token like the API. Off by default.
    #[arg(long)]
    pub test_hooks: bool,

    /// Seconds a connection has to send a complete request header, counted from when it
    /// is ready for one: silent, slow and idle keep-alive connections are closed after it.
    #[arg(long, value_name = "SECS", default_value_t = 65)]
    pub header_timeout: u64,

    /// Longest pause, in seconds, in the middle of a request body before the request is
    /// abandoned.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub body_timeout: u64,

    /// Most connections open at once (lowered to fit the open-file limit). At the limit,
    /// the oldest connection with no request in progress is closed to make room.
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_connections: usize,

    /// Fault injection: only faults requests of this route template,
    /// e.g. "GET /cdn/{key}" or "GET /api/v1/media-manager/files/{id}".
    #[arg(long, value_name = "ROUTE")]
    pub fault_route: Option<String>,

    /// Behave like another plausible shape of the API (comma-separated or repeated):
    /// bare-lists, wrapped, ignore-filters, created-201, delete-204, page-size-50,
    /// page-size-50-echo, no-move, unique-names, unique-file-names, strict-timestamps. See
    /// docs/API-VARIANTS.md.
    #[arg(
        long = "api-variant",
        value_name = "NAME[,NAME…]",
        value_delimiter = ','
    )]
    pub api_variants: Vec<String>,
}

/// Everything [`start`] needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub tokens: Vec<String>,
    pub url_ttl: Duration,
    pub max_upload_size: u64,
    pub faults: FaultConfig,
    pub ignore_range: bool,
    pub seed_sample: bool,
    pub variants: Variants,
    /// Serve `/_emulator/*` (behind the bearer token).
    pub test_hooks: bool,
    pub limits: ConnLimits,
}

/// Default largest upload: 5 GiB.
pub const DEFAULT_MAX_UPLOAD: u64 = 5 << 30;

impl ServerConfig {
    /// A server on an ephemeral loopback port with one token, no test hooks, defaults
    /// elsewhere: what `mediafs mount` starts.
    pub fn local(data_dir: PathBuf, token: &str) -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
            tokens: vec![token.to_string()],
            url_ttl: Duration::from_secs(600),
            max_upload_size: DEFAULT_MAX_UPLOAD,
            faults: FaultConfig::default(),
            ignore_range: false,
            seed_sample: false,
            variants: Variants::none(),
            test_hooks: false,
            limits: ConnLimits::default(),
        }
    }

    /// [`ServerConfig::local`] with the test hooks on.
    pub fn for_tests(data_dir: PathBuf, token: &str) -> Self {
        ServerConfig {
            test_hooks: true,
            ..ServerConfig::local(data_dir, token)
        }
    }

    /// Builds a config from the CLI flags. Returns the token it generated, if it had to.
    pub fn from_args(args: ServeArgs) -> anyhow::Result<(Self, Option<String>)> {
        let data_dir = match args.data_dir {
            Some(d) => d,
            None => dirs::data_dir()
                .context("no user data directory; pass --data-dir")?
                .join("mediafs")
                .join("library"),
        };
        let mut tokens: Vec<String> = args
            .tokens
            .iter()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect();
        if let Some(path) = &args.token_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading token file {}", path.display()))?;
            tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string),
            );
        }
        let generated = if tokens.is_empty() {
            let t = format!("mfs_{}", hex::encode(rand::random::<[u8; 16]>()));
            tokens.push(t.clone());
            Some(t)
        } else {
            None
        };
        let max_upload_size = parse_size(&args.max_upload_size)
            .map_err(|e| anyhow::anyhow!("--max-upload-size: {e}"))?;
        let faults = FaultConfig {
            latency_ms: args.fault_latency_ms,
            error_rate: args.fault_error_rate,
            rate_limit_rate: args.fault_429_rate,
            drop_rate: args.fault_drop_rate,
            route: args.fault_route,
            ..FaultConfig::default()
        };
        faults.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
        let variants = Variants::parse(&args.api_variants)
            .map_err(|e| anyhow::anyhow!("--api-variant: {e}"))?;
        Ok((
            ServerConfig {
                listen: args.listen,
                data_dir,
                tokens,
                url_ttl: Duration::from_secs(args.url_ttl),
                max_upload_size,
                faults,
                ignore_range: args.ignore_range,
                seed_sample: args.sample,
                variants,
                test_hooks: args.test_hooks,
                limits: ConnLimits {
                    header_timeout: Duration::from_secs(args.header_timeout.max(1)),
                    body_timeout: Duration::from_secs(args.body_timeout.max(1)),
                    max_connections: args.max_connections.max(1),
                },
            },
            generated,
        ))
    }
}

impl TryFrom<ServeArgs> for ServerConfig {
    type Error = anyhow::Error;

    /// Like [`ServerConfig::from_args`], for callers that always pass a token.
    fn try_from(args: ServeArgs) -> anyhow::Result<Self> {
        Ok(ServerConfig::from_args(args)?.0)
    }
}

/// Parses a size: plain bytes or a number with a K/M/G/T suffix (powers of 1024; `KiB`,
/// `MB`, … and lowercase accepted). `"5G"` → 5368709120.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "not a size: {text:?} (expected e.g. 1048576, 512K, 64M, 5G)"
        ));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("number too large in {text:?}"))?;
    let shift = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => return Err(format!("unknown size suffix {other:?} in {text:?}")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("size too large: {text:?}"))
}

/// Shared state of all handlers.
pub(crate) struct AppState {
    pub db: db::Db,
    pub blobs: blobs::BlobStore,
    pub signer: cdn::Signer,
    /// `http://ADDR`, used in signed URLs.
    pub base_url: String,
    pub tokens: Vec<String>,
    pub url_ttl: Duration,
    pub max_upload_size: u64,
    pub ignore_range: bool,
    pub faults: faults::Faults,
    pub variants: Variants,
    pub test_hooks: bool,
}

/// A running server. Dropping it leaves the server running until the runtime ends; call
/// [`ServerHandle::shutdown`] to stop it.
pub struct ServerHandle {
    addr: SocketAddr,
    shutdown: oneshot::Sender<()>,
    join: JoinHandle<()>,
}

impl ServerHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets requests in flight finish (at most 5 s), then returns.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(());
        let mut join = self.join;
        if tokio::time::timeout(Duration::from_secs(5), &mut join)
            .await
            .is_err()
        {
            // A slow download keeps a connection open: do not wait for it forever.
            join.abort();
            let _ = join.await;
        }
    }
}

/// Opens (or creates) the library, binds the listener and spawns the server on the current
/// tokio runtime. Returns once it is listening.
pub async fn start(config: ServerConfig) -> anyhow::Result<ServerHandle> {
    anyhow::ensure!(
        !config.tokens.is_empty(),
        "the server needs at least one token"
    );
    config
        .faults
        .validate()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let data_dir = config.data_dir.clone();
    let (db, blobs, created) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        crate::private_files::ensure_dir(&data_dir).context("library directory")?;
        let blobs = blobs::BlobStore::open(&data_dir.join("blobs"))?;
        let (db, created) = db::Db::open(&data_dir.join("library.db"))?;
        Ok((db, blobs, created))
    })
    .await??;
    if created && config.seed_sample {
        sample::seed(&db, &blobs)
            .await
            .context("seeding the sample library")?;
    }
    let secret = db.signing_secret().await?;

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    // A wildcard listen address is not something a client can connect to.
    let url_host = if addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let state = Arc::new(AppState {
        db,
        blobs,
        signer: cdn::Signer::new(secret),
        base_url: format!("http://{url_host}"),
        tokens: config.tokens,
        url_ttl: config.url_ttl,
        max_upload_size: config.max_upload_size,
        ignore_range: config.ignore_range,
        faults: faults::Faults::new(config.faults),
        variants: config.variants,
        test_hooks: config.test_hooks,
    });
    // Per pause, not per body: a large upload may take long, a stalled one may not.
    let app = routes::router(state)
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            config.limits.body_timeout,
        ))
        .layer(axum::middleware::map_response(nosniff));
    let (tx, rx) = oneshot::channel::<()>();
    let limits = config.limits;
    let join = tokio::spawn(async move {
        connections::serve(listener, app, limits, async move {
            // A dropped handle (sender gone without a send) is not a shutdown request.
            if rx.await.is_err() {
                std::future::pending::<()>().await;
            }
        })
        .await;
    });
    tracing::debug!(%addr, "media manager server listening");
    Ok(ServerHandle {
        addr,
        shutdown: tx,
        join,
    })
}

/// Every answer, from the API, the CDN or an injected fault: a browser must never guess
/// a type (e.g. HTML in a file an uploader called text/plain).
async fn nosniff(mut r: axum::response::Response) -> axum::response::Response {
    r.headers_mut().insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        axum::http::HeaderValue::from_static("nosniff"),
    );
    r
}

/// `mediafs serve`: starts the server, prints where it is, waits for SIGINT/SIGTERM and
/// shuts down gracefully.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let (config, generated) = ServerConfig::from_args(args)?;
    let data_dir = config.data_dir.clone();
    let variants = config.variants;
    let handle = start(config).await?;
    println!("mediafs server listening on {}", handle.base_url());
    println!("library: {}", data_dir.display());
    if !variants.is_empty() {
        println!("API variant: {variants}");
    }
    if let Some(token) = generated {
        // Kept in a private file rather than printed: terminals and CI logs get recorded.
        let path = data_dir.join("generated-token");
        crate::private_files::replace(&path, token.as_bytes())?;
        println!(
            "generated a token, saved in {} (pass --token-file to choose one)",
            path.display()
        );
    }
    tracing::info!(url = %handle.base_url(), data_dir = %data_dir.display(), "serving");
    wait_for_signal().await;
    tracing::info!("shutting down");
    handle.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async {
                match term.as_mut() {
                    Some(t) => { t.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_size_accepts_suffixes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("64m"), Ok(64 << 20));
        assert_eq!(parse_size("5G"), Ok(5 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size(" 1 MB "), Ok(1 << 20));
        assert!(parse_size("").is_err());
        assert!(parse_size("G").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("99999999999T").is_err());
    }
}
