//! Connecting to a route's backends: pick, connect with a timeout, fail over.
//!
//! Connects are non-blocking socket + connect(2) + a writability wait through
//! the runtime, raced against a timer. Dropping a readiness wait loses nothing
//! (unlike an in-flight io_uring CONNECT or ACCEPT whose completion could
//! still hand us an fd after we gave up).

use std::cell::RefCell;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::Arc;
use std::time::Duration;

use monoio::net::TcpStream;
use socket2::{Domain, Socket, Type};

use crate::balance;
use crate::http::io::{Cancel, Io};
use crate::shared::{epoch_ms, LiveBackend, LiveRoute, RouteSlot};
use crate::sys;

/// Most backends tried for one client connection.
pub const MAX_ATTEMPTS: usize = 3;

/// The client side of an upstream TLS session (boxed: a plain upstream
/// carries one null pointer for it).
pub type UpTls = Box<RefCell<crate::tls::TlsConn>>;

/// An idle connection handed back by a keep-alive pool.
pub type Reused = (TcpStream, Option<UpTls>);

/// An open upstream connection; counts toward its backend's active connections
/// (least_conn) until dropped or [`released`](Upstream::release).
pub struct Upstream<'r> {
    pub stream: TcpStream,
    /// The backend has `tls`: bytes go through this session's record layer.
    pub tls: Option<UpTls>,
    pub backend: usize,
    /// Taken from an idle pool rather than freshly connected.
    pub reused: bool,
    active: Active<'r>,
}

/// An upstream connection that outlives its request's borrow of the route
/// (a gateway session runs after its request's future is gone): it keeps
/// its count in the backend's `active` until dropped.
pub struct OwnedUpstream {
    pub stream: TcpStream,
    route: Arc<LiveRoute>,
    backend: usize,
}

impl Drop for OwnedUpstream {
    fn drop(&mut self) {
        if let Some(b) = self.route.backends.get(self.backend) {
            b.state.active.fetch_sub(1, Relaxed);
        }
    }
}

impl Upstream<'_> {
    /// The same connection, its `active` count carried by `route` (which
    /// must be the route it was connected for) instead of a borrow.
    pub fn into_owned(self, route: Arc<LiveRoute>) -> OwnedUpstream {
        let Upstream {
            stream,
            backend,
            active,
            ..
        } = self;
        debug_assert!(std::ptr::eq(active.route, &*route));
        // The count moves to the owned guard, which gives it back on drop.
        std::mem::forget(active);
        OwnedUpstream {
            stream,
            route,
            backend,
        }
    }

    /// Stops counting the connection as active and hands back its socket
    /// (to park it in an idle pool).
    pub fn release(self) -> TcpStream {
        let Upstream { stream, active, .. } = self;
        drop(active);
        stream
    }

    /// As [`Self::release`], with the TLS session if any (its record
    /// buffers go back to the worker's free list while it idles).
    pub fn release_tls(self) -> Reused {
        let Upstream {
            stream,
            tls,
            active,
            ..
        } = self;
        drop(active);
        if let Some(t) = &tls {
            t.borrow_mut().release();
        }
        (stream, tls)
    }

    /// The connection for an exchange direction that has it to itself:
    /// io_uring ops on a plain socket, the record layer over TLS.
    pub fn io<'a>(&'a mut self, cancel: &'a Cancel) -> Io<'a> {
        match &self.tls {
            None => Io::Ring(&mut self.stream, cancel),
            Some(t) => Io::Tls(&self.stream, t),
        }
    }

    /// The connection for a direction that shares it with the other one.
    pub fn ready(&self) -> Io<'_> {
        ready_io(&self.stream, self.tls.as_deref())
    }
}

/// [`Upstream::ready`] for split borrows.
pub fn ready_io<'a>(s: &'a TcpStream, tls: Option<&'a RefCell<crate::tls::TlsConn>>) -> Io<'a> {
    match tls {
        None => Io::Ready(s),
        Some(t) => Io::Tls(s, t),
    }
}

/// One count in a backend's `active`, given back on drop.
struct Active<'r> {
    route: &'r LiveRoute,
    backend: usize,
}

impl<'r> Active<'r> {
    fn new(route: &'r LiveRoute, backend: usize) -> Active<'r> {
        if let Some(b) = route.backends.get(backend) {
            b.state.active.fetch_add(1, Relaxed);
            // Same cache line as `active`, just written: no extra transfer.
            b.state.conns.fetch_add(1, Relaxed);
        }
        Active { route, backend }
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.route.backends.get(self.backend) {
            b.state.active.fetch_sub(1, Relaxed);
        }
    }
}

/// Why no backend could be reached.
#[derive(Debug)]
pub struct ConnectFailed {
    pub attempts: usize,
    pub last: Option<io::Error>,
}

impl ConnectFailed {
    /// The process ran out of fds (or memory, or local ports): the caller
    /// should stop accepting for a moment rather than take more clients.
    pub fn local_shortage(&self) -> bool {
        self.last.as_ref().is_some_and(local_shortage)
    }
}

impl std::fmt::Display for ConnectFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.last {
            Some(e) => write!(f, "{} connect attempt(s) failed, last: {e}", self.attempts),
            None => write!(f, "no healthy backend"),
        }
    }
}

/// Picks a backend for `client_hash` and connects, trying up to
/// [`MAX_ATTEMPTS`] different backends. A failed backend is put in cooldown.
/// Backends that active health checks found unhealthy are never tried: when
/// every backend is, this fails at once with `last: None` (HTTP answers 503,
/// a tcp client is closed). A backend whose process is not running is
/// started first ([`cold_start`]).
/// `reuse(i)` may hand over an idle connection to backend `i` instead of a
/// new connect (HTTP keep-alive pools; tunnels pass `|_| None`).
pub async fn connect<'r>(
    route: &'r LiveRoute,
    slot: &RouteSlot,
    client_hash: u64,
    now_ms: impl Fn() -> u64,
    mut reuse: impl FnMut(usize) -> Option<Reused>,
) -> Result<Upstream<'r>, ConnectFailed> {
    let n = route.backends.len();
    let attempts = n.min(MAX_ATTEMPTS);
    let mut tried = [usize::MAX; MAX_ATTEMPTS];
    let mut last = None;
    let policy = route.cfg.balance;
    for attempt in 0..attempts {
        let cursor = slot.cursor.get();
        slot.cursor.add(1);
        let now = now_ms();
        let tried_now = &tried[..attempt];
        let backends = &route.backends;
        let pick = |ok: &dyn Fn(usize) -> bool| {
            let active = |i: usize| backends[i].state.active.load(Relaxed);
            let seed = |i: usize| backends[i].seed;
            if route.weighted {
                balance::pick_weighted(
                    policy,
                    n,
                    cursor,
                    client_hash,
                    tried_now,
                    ok,
                    active,
                    seed,
                    |i| backends[i].cfg.weight,
                    |i| backends[i].cfg.priority,
                )
            } else {
                balance::pick(policy, n, cursor, client_hash, tried_now, ok, active, seed)
            }
        };
        // Every untried backend cooling down: try the one that failed longest
        // ago rather than refuse outright (a lone backend that restarts must
        // not be shunned for the whole cooldown, as nginx does for one server).
        let Some(i) = pick(&|i| {
            let s = &backends[i].state;
            s.available(now) && s.health_ok()
        })
        .or_else(|| {
            (0..n)
                .filter(|&i| !tried_now.contains(&i) && backends[i].state.health_ok())
                .min_by_key(|&i| backends[i].state.down_until_ms.load(Relaxed))
        }) else {
            break;
        };
        tried[attempt] = i;
        let b = &backends[i];
        if !b.state.ready() {
            if let Err(e) = cold_start(b).await {
                if b.state.mark_failed(now_ms()) {
                    tracing::warn!(
                        route = %route.cfg.name,
                        backend = %b.cfg.name,
                        "backend process unavailable, cooling down: {e}"
                    );
                }
                last = Some(e);
                continue;
            }
        }
        if let Some((stream, tls)) = reuse(i) {
            return Ok(Upstream {
                stream,
                tls,
                backend: i,
                reused: true,
                active: Active::new(route, i),
            });
        }
        match connect_timeout(b.cfg.addr, route.cfg.timeouts.connect).await {
            Ok(stream) => {
                let tls = match &b.cfg.tls {
                    None => None,
                    Some(cfg) => {
                        let deadline = monoio::time::Instant::now() + route.cfg.timeouts.connect;
                        // Boxed: the handshake's state (the rustls session)
                        // would otherwise widen every exchange's future,
                        // plain backends' too.
                        let shake = Box::pin(crate::tls::client::handshake(&stream, cfg, deadline));
                        match shake.await {
                            Ok(t) => Some(Box::new(RefCell::new(t))),
                            Err(e) => {
                                if b.state.mark_failed(now_ms()) {
                                    tracing::warn!(
                                        route = %route.cfg.name,
                                        backend = %b.cfg.name,
                                        addr = %b.cfg.addr,
                                        "backend TLS handshake failed, cooling down: {e}"
                                    );
                                }
                                last = Some(io::Error::other(format!(
                                    "TLS handshake with {}: {e}",
                                    b.cfg.addr
                                )));
                                continue;
                            }
                        }
                    }
                };
                b.state.mark_ok();
                return Ok(Upstream {
                    stream,
                    tls,
                    backend: i,
                    reused: false,
                    active: Active::new(route, i),
                });
            }
            // Out of fds, memory or local ports: our shortage, not the
            // backend's. Do not cool it down; other backends would fail alike.
            Err(e) if local_shortage(&e) => {
                tracing::debug!(route = %route.cfg.name, "cannot connect upstream: {e}");
                last = Some(e);
                break;
            }
            Err(e) => {
                if b.state.mark_failed(now_ms()) {
                    tracing::warn!(
                        route = %route.cfg.name,
                        backend = %b.cfg.name,
                        addr = %b.cfg.addr,
                        "backend connect failed, cooling down: {e}"
                    );
                }
                last = Some(e);
            }
        }
    }
    Err(ConnectFailed {
        attempts: tried.iter().filter(|&&t| t != usize::MAX).count(),
        last,
    })
}

/// How often a connection waiting for a cold start looks at the process state.
const COLD_START_POLL: Duration = Duration::from_millis(2);

/// Waits until the process of backend `b` accepts connections, asking the
/// control thread (the supervisor) to start it. Simultaneous callers share
/// one start: they only raise `start_wanted`; the supervisor alone spawns.
///
/// Waits on short timer polls of one atomic (no lock, no channel): only
/// connections that arrive while the process is down pay for it, and the
/// running case never gets here.
pub async fn cold_start(b: &LiveBackend) -> io::Result<()> {
    let st = &b.state;
    let attempts = st.start_attempts.load(Acquire);
    let limit = b.cfg.ready_timeout;
    let deadline = epoch_ms().saturating_add(limit.as_millis() as u64);
    loop {
        if st.ready() {
            return Ok(());
        }
        if !st.start_wanted.load(Relaxed) {
            st.start_wanted.store(true, Release);
        }
        if st.start_attempts.load(Acquire) != attempts && !st.ready() {
            return Err(io::Error::other(format!(
                "process of backend {:?} failed to start ({}; see /api/status)",
                b.cfg.name,
                st.proc_state().as_str()
            )));
        }
        if epoch_ms() >= deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "process of backend {:?} not ready within {:?}",
                    b.cfg.name, limit
                ),
            ));
        }
        monoio::time::sleep(COLD_START_POLL).await;
    }
}

/// Errors that say this process (or host) ran short, whatever the backend.
fn local_shortage(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

/// Non-blocking connect with TCP_NODELAY, bounded by `timeout`.
pub async fn connect_timeout(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        None,
    )?;
    sock.set_nodelay(true)?;
    match sock.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let std: std::net::TcpStream = sock.into();
    let stream = TcpStream::from_std(std)?;
    monoio::select! {
        r = stream.writable(false) => r?,
        _ = monoio::time::sleep(timeout) => {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"));
        }
    }
    if let Some(e) = sys::take_socket_error(stream.as_raw_fd())? {
        return Err(e);
    }
    Ok(stream)
}

/// Wraps an accepted non-blocking socket for the runtime.
pub fn adopt(fd: std::os::fd::OwnedFd) -> io::Result<TcpStream> {
    TcpStream::from_std(std::net::TcpStream::from(fd))
}
