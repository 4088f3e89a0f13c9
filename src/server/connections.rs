//! Serving connections: the accept loop with a connection limit, TCP_NODELAY, a header
//! timeout that also closes silent and idle keep-alive connections, and graceful shutdown.
//!
//! A plain `axum::serve` has no timeouts and no limit: another local user could hold every
//! file descriptor with idle sockets. Here, when the limit is reached, the oldest
//! connection with no request in flight is closed to make room (as nginx reuses idle
//! keep-alive connections), so an idle-socket flood cannot lock out a real client; when
//! every connection is busy, new ones wait in the kernel's backlog.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::response::Response;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

/// Limits on each connection and on how many there are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnLimits {
    /// Time a connection has to send a complete request header, counted from when it is
    /// ready for one: closes silent, slow-header and idle keep-alive connections. Longer
    /// than mediafs's own client keeps an idle connection (60 s), so that client always
    /// closes first and never races a close with a request.
    pub header_timeout: Duration,
    /// Longest pause in the middle of a request body.
    pub body_timeout: Duration,
    /// Most connections open at once; lowered to fit the open-file limit.
    pub max_connections: usize,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_timeout: Duration::from_secs(65),
            body_timeout: Duration::from_secs(60),
            max_connections: 256,
        }
    }
}

/// File descriptors kept for everything but connections (database, log, listener, …).
const FD_RESERVE: u64 = 64;

/// `max` lowered so that every connection can also hold one open file (a blob being
/// served or received) within RLIMIT_NOFILE: accept() then never fails for lack of
/// descriptors.
pub fn effective_max_connections(max: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0
        || lim.rlim_cur == libc::RLIM_INFINITY
    {
        return max.max(1);
    }
    let fit = (lim.rlim_cur.saturating_sub(FD_RESERVE) / 2) as usize;
    max.min(fit).max(1)
}

/// One open connection, as the eviction policy sees it.
struct Conn {
    in_flight: AtomicUsize,
    /// Already asked to close: the next eviction picks another one.
    evicted: AtomicBool,
    close: Notify,
}

/// Open connections by accept order (oldest first).
#[derive(Default)]
struct Registry {
    conns: Mutex<BTreeMap<u64, Arc<Conn>>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks the oldest connection with no request in flight to close. False if all are busy.
    fn evict_idle(&self) -> bool {
        let conns = self.lock();
        match conns.values().find(|c| {
            c.in_flight.load(Ordering::Acquire) == 0 && !c.evicted.load(Ordering::Acquire)
        }) {
            Some(c) => {
                c.evicted.store(true, Ordering::Release);
                c.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Counts a request as in flight until its response body is done or dropped.
struct InFlight(Arc<Conn>);

impl InFlight {
    fn new(conn: Arc<Conn>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(conn)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in flight while it streams.
struct TrackedBody {
    inner: Body,
    _in_flight: InFlight,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets requests in flight
/// finish. Dropping the returned future closes every connection.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let max = effective_max_connections(limits.max_connections);
    let slots = Arc::new(Semaphore::new(max));
    let registry = Arc::new(Registry::default());
    let mut tasks = JoinSet::new();
    let mut next_id = 0u64;
    tokio::pin!(shutdown);
    'accept: loop {
        // At the limit: make room by closing an idle connection, else wait for one to end
        // (looking again now and then: a busy connection may have become idle).
        let permit = loop {
            if let Ok(p) = slots.clone().try_acquire_owned() {
                break p;
            }
            registry.evict_idle();
            tokio::select! {
                p = slots.clone().acquire_owned() => break p.expect("the semaphore is never closed"),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = &mut shutdown => break 'accept,
            }
        };
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: the limit keeps this rare; back off, don't spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Responses are written as headers then body: without NODELAY, Nagle holds the
        // second small segment until the client's delayed ACK (~40 ms per small file).
        let _ = stream.set_nodelay(true);
        let conn = Arc::new(Conn {
            in_flight: AtomicUsize::new(0),
            evicted: AtomicBool::new(false),
            close: Notify::new(),
        });
        let id = next_id;
        next_id += 1;
        registry.lock().insert(id, conn.clone());
        let service = {
            let conn = conn.clone();
            let app = app.clone();
            tower::service_fn(move |req: Request<hyper::body::Incoming>| {
                let in_flight = InFlight::new(conn.clone());
                let app = app.clone();
                async move {
                    let resp: Response = app.oneshot(req.map(Body::new)).await?;
                    Ok::<_, Infallible>(resp.map(|inner| {
                        Body::new(TrackedBody {
                            inner,
                            _in_flight: in_flight,
                        })
                    }))
                }
            })
        };
        let registry = registry.clone();
        let header_timeout = limits.header_timeout;
        tasks.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .keep_alive(true);
            let served =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            tokio::pin!(served);
            let mut closing = false;
            loop {
                tokio::select! {
                    r = served.as_mut() => {
                        if let Err(e) = r {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    _ = conn.close.notified(), if !closing => {
                        // Idle: closes now; busy (a request just arrived): after the response.
                        closing = true;
                        served.as_mut().graceful_shutdown();
                    }
                }
            }
            registry.lock().remove(&id);
        });
        // Reap finished connection tasks so the set does not grow.
        while tasks.try_join_next().is_some() {}
    }
    drop(listener);
    for c in registry.lock().values() {
        c.close.notify_one();
    }
    while tasks.join_next().await.is_some() {}
}
