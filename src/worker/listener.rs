//! SO_REUSEPORT listeners, one per worker per address, and the accept loop.
//!
//! Accepting is readiness-driven too: wait until the listener is readable,
//! then accept4(SOCK_NONBLOCK) in a batch until EAGAIN. Every worker has its
//! own socket, so the kernel spreads connections; there is no shared accept
//! queue, lock or handoff.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use crate::config::Protocol;
use crate::http;
use crate::proxy::{connect, tcp};
use crate::sys;
use std::sync::atomic::Ordering::Relaxed;

use crate::shared::epoch_ms;
use crate::worker::{limits, LocalEvent, WorkerCtx};

/// TCP_DEFER_ACCEPT on http listeners, in seconds.
const DEFER_ACCEPT_SECS: u32 = 1;

/// Whether `addr` is an http listener in the worker's current config.
/// Whether the client always speaks first on `addr`: HTTP, TLS (the
/// ClientHello), a PROXY header or an SNI-routed tcp port. A plain tcp
/// route may carry a server-first protocol (SMTP, MySQL): never deferred.
fn client_speaks_first(ctx: &WorkerCtx, addr: SocketAddr) -> bool {
    let live = ctx.live();
    live.by_listen
        .get(&addr)
        .and_then(|&i| live.snapshot.listeners.get(i))
        .is_some_and(|l| l.protocol == Protocol::Http || l.tls.is_some() || l.edge.active())
}

/// Most connections accepted per readiness event before yielding to other tasks.
const ACCEPT_BATCH: usize = 64;

/// Creates one listening socket for `addr` with SO_REUSEADDR + SO_REUSEPORT,
/// TCP_NODELAY (inherited by accepted sockets) and a non-blocking accept.
pub fn bind(addr: SocketAddr, backlog: u32) -> io::Result<std::net::TcpListener> {
    let sock = Socket::new(
        Domain::for_address(addr),
        Type::STREAM.nonblocking().cloexec(),
        None,
    )?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_nodelay(true)?;
    sock.bind(&addr.into())?;
    sock.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(sock.into())
}

/// Fails with `AddrInUse` when some other socket already listens on `addr`,
/// even one with SO_REUSEPORT: a second ringmesh must not silently share our ports.
pub fn ensure_free(addr: SocketAddr) -> io::Result<()> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
    // SO_REUSEADDR lets us ignore TIME_WAIT leftovers; it does not allow
    // binding next to a listening socket.
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.bind(&addr.into())
}

/// Accepts on `listener` until `stop` fires; each connection becomes a task.
pub async fn accept_loop(
    ctx: Rc<WorkerCtx>,
    listener: monoio::net::TcpListener,
    addr: SocketAddr,
    stop: Rc<LocalEvent>,
) {
    let fd = listener.as_raw_fd();
    if client_speaks_first(&ctx, addr) {
        // The client speaks first: the kernel hands a connection over only
        // once its first bytes are in (nginx's `listen ... deferred`), so the
        // request is there when the task starts: no readiness wait, no
        // empty read, no wake-up for a bare handshake. A client that stays
        // silent is accepted after about a second anyway and meets the head
        // timeout (408).
        if let Err(e) = sys::set_defer_accept(fd, DEFER_ACCEPT_SECS) {
            tracing::debug!(%addr, "TCP_DEFER_ACCEPT not set: {e}");
        }
    }
    loop {
        monoio::select! {
            _ = stop.wait() => break,
            r = listener.readable(false) => {
                if let Err(e) = r {
                    tracing::warn!(%addr, "listener wait failed: {e}");
                    monoio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        // Out of fds a moment ago (an upstream connect failed): leave the
        // queue alone until the pause ends.
        let paused = ctx.accept_paused_until().saturating_sub(epoch_ms());
        if paused > 0 {
            // In steps: a closing connection ends the pause early.
            monoio::time::sleep(Duration::from_millis(paused).min(crate::worker::ACCEPT_BACKOFF))
                .await;
            continue;
        }
        for _ in 0..ACCEPT_BATCH {
            match sys::accept(fd) {
                Ok((sock, peer)) => dispatch(&ctx, sock, peer, addr),
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR | libc::ECONNABORTED | libc::EPROTO | libc::EPERM) => {}
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM) => {
                        // Out of fds or memory: back off instead of spinning on a
                        // readable listener; accepting resumes once fds are free.
                        ctx.pause_accepting(&e, crate::worker::ACCEPT_BACKOFF);
                        monoio::time::sleep(crate::worker::ACCEPT_BACKOFF).await;
                        break;
                    }
                    _ => {
                        tracing::warn!(%addr, "accept failed: {e}");
                        monoio::time::sleep(Duration::from_millis(20)).await;
                        break;
                    }
                },
            }
        }
    }
    tracing::debug!(worker = ctx.id, %addr, "listener closed");
}

fn dispatch(ctx: &Rc<WorkerCtx>, sock: std::os::fd::OwnedFd, peer: SocketAddr, addr: SocketAddr) {
    let live = ctx.live();
    let Some(spec) = live
        .by_listen
        .get(&addr)
        .and_then(|&i| live.snapshot.listeners.get(i))
    else {
        // The route was removed by a reload while the connection queued.
        return;
    };
    if spec.edge.active() {
        // PROXY header or SNI first: limits apply to the address it gives.
        return crate::edge::accept(ctx, live.clone(), sock, peer, addr);
    }
    let tcp_route = match spec.protocol {
        Protocol::Tcp => match spec.routes.first().and_then(|&i| live.routes.get(i)) {
            Some(r) => Some(r.clone()),
            None => return,
        },
        // Each request picks its route by Host.
        Protocol::Http => None,
    };
    // Connection limits: the route is known here for tcp listeners and for
    // http listeners with a single route.
    let limit_route = match (&tcp_route, spec.routes.as_slice()) {
        (Some(r), _) => Some(r.clone()),
        (None, [only]) => live.routes.get(*only).cloned(),
        _ => None,
    };
    let admission = match limits::admit(
        &ctx.shared,
        &live.snapshot.limits,
        limit_route.as_deref(),
        peer.ip(),
    ) {
        Ok(a) => a,
        Err(why) => {
            ctx.shared.refused_connections.fetch_add(1, Relaxed);
            if let Some(s) = limit_route.as_ref().and_then(|r| r.slots.get(ctx.id)) {
                s.refused.add(1);
            }
            tracing::debug!(%peer, %addr, "refused: {} reached", why.as_str());
            if tcp_route.is_none() {
                if let Ok(stream) = connect::adopt(sock) {
                    monoio::spawn(limits::refuse_http(stream, why));
                }
            }
            return;
        }
    };
    let stream = match connect::adopt(sock) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%addr, "cannot register accepted socket: {e}");
            return;
        }
    };
    let ctx = ctx.clone();
    match tcp_route {
        Some(route) => {
            let mut guard = ctx.conn_opened(&route);
            guard.hold(admission);
            // The serve futures are spawned as they are (no wrapping block
            // holding a second copy of their arguments): they are the whole
            // task of an idle connection.
            monoio::spawn(tcp::serve(ctx, stream, peer, route, guard));
        }
        None => {
            let mut guard = ctx.conn_opened_unrouted();
            guard.hold(admission);
            monoio::spawn(http::serve(ctx, live, stream, peer, addr, guard));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    fn fut_size5<A, B, C, D, E, F: Future>(_: impl FnOnce(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }
    fn fut_size6<A, B, C, D, E, G, F: Future>(_: impl FnOnce(A, B, C, D, E, G) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A spawned connection future is most of what an idle connection costs
    /// (the task allocation, rounded up to the allocator's size class; see
    /// bench/README.md "Idle memory"). Bounds at the top of the size class
    /// (tcp with some slack), so a change that, say, keeps a second copy of
    /// the socket in the future shows here.
    #[test]
    fn connection_task_sizes() {
        let tcp = fut_size5(crate::proxy::tcp::serve);
        let http = fut_size6(crate::http::serve);
        eprintln!(
            "tcp::serve {tcp} B, http::serve {http} B; tunnel parts {:?}; TcpStream {} B",
            crate::proxy::splice::debug_sizes(),
            std::mem::size_of::<monoio::net::TcpStream>(),
        );
        eprintln!("http parts {:?}", crate::http::conn::debug_sizes());
        // Measured (debug build): tcp 688 B, http 336 B. The task adds
        // its header and trailer (40 B) and the stage's tag (8 B): for
        // http exactly 384 B, mimalloc's 384 B size class; one byte more
        // and an idle http connection costs the 448 B class (the 0.6 KiB
        // bar of issue 15 then fails: bench/README.md "Idle memory").
        // tcp is in the 768 B class. The tunnel is one hand-written future
        // (two readiness waits and a coarse deadline), the client address is
        // compact (`worker::peer::Peer`), the http connection keeps across
        // its idle wait only the `Conn`, the config and the wait itself
        // (its loop is not an `async fn` of the `Conn`, its flags are in
        // the `Conn`'s padding, the worker is reached through the guard);
        // exchange buffers, TLS start and h2 hand-offs are boxed or per
        // request.
        assert!(tcp <= 728, "tcp connection future grew to {tcp} B");
        assert!(http <= 336, "http connection future grew to {http} B");
    }
}
