//! A TCP route end to end: accepted client -> backend -> spliced tunnel.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use std::cell::{Cell, RefCell};

use monoio::net::TcpStream;
use monoio::time::Instant;

use crate::accesslog::{Kind, Record};

use crate::balance::client_hash;
use crate::edge::{self, Preamble};
use crate::http::buf::BufPool;
use crate::proxy::connect;
use crate::proxy::splice::{tunnel, Meter, TunnelEnd};
use crate::shared::{LiveRoute, RouteSlot};
use crate::tls::TlsConn;
use crate::worker::peer::Peer;
use crate::worker::timer::CoarseTimers;
use crate::worker::{ConnGuard, WorkerCtx};

/// Counts a tunnel's bytes into its route's slot and reads the worker's clock.
pub(crate) struct ConnMeter<'a> {
    pub(crate) ctx: &'a WorkerCtx,
    pub(crate) slot: &'a RouteSlot,
    /// The connection's own counts (client -> backend, backend -> client),
    /// kept only when its access log line needs them.
    pub(crate) counted: Option<&'a [Cell<u64>; 2]>,
}

impl Meter for ConnMeter<'_> {
    #[inline]
    fn now_ms(&self) -> u64 {
        self.ctx.now_ms()
    }
    #[inline]
    fn moved(&self, up: bool, n: u64) {
        if up {
            self.slot.bytes_in.add(n);
        } else {
            self.slot.bytes_out.add(n);
        }
        if let Some(c) = self.counted {
            let i = usize::from(!up);
            c[i].set(c[i].get() + n);
        }
    }
    #[inline]
    fn timers(&self) -> &CoarseTimers {
        &self.ctx.timers
    }
    #[inline]
    fn bufs(&self) -> &BufPool {
        &self.ctx.bufs
    }
}

/// Serves one client connection of a tcp route.
/// `guard` counts the connection open until the tunnel ends.
pub fn serve(
    ctx: Rc<WorkerCtx>,
    client: TcpStream,
    peer: SocketAddr,
    route: Arc<LiveRoute>,
    guard: ConnGuard,
) -> impl std::future::Future<Output = ()> {
    serve_with(ctx, client, peer, route, Preamble::default(), guard)
}

/// [`serve`] for a connection whose first bytes the edge already read
/// (`pre`: they go upstream first, after a PROXY header if the backend wants one).
/// Not an `async fn`: an async fn's future keeps its arguments twice (as
/// passed, and moved into its body), and this future is the whole task of
/// an idle tunnel. The `async move` block holds each of them once.
#[allow(clippy::manual_async_fn)] // on purpose, see above
pub fn serve_with(
    ctx: Rc<WorkerCtx>,
    client: TcpStream,
    peer: SocketAddr,
    route: Arc<LiveRoute>,
    pre: Preamble,
    guard: ConnGuard,
) -> impl std::future::Future<Output = ()> {
    // Boxed, and only when the edge read something: a preamble is used
    // before the tunnel starts, but what the future captures it holds for
    // the tunnel's whole life.
    let pre = (pre.bytes.capacity() > 0 || pre.dst.is_some()).then(|| Box::new(pre));
    // Compact (16 bytes, not 32): the address is kept for the tunnel's life.
    let peer = Peer::from(peer);
    async move {
        let Some(slot) = route.slots.get(ctx.id) else {
            return;
        };
        // Access log: the start time and byte counts, only when the route logs.
        // Boxed: a route without a log holds one empty pointer in the
        // tunnel's task instead of 32 B of clock and counters.
        let logged = route.log.map(|_| {
            Box::new(TcpLog {
                started: Instant::now(),
                counted: Default::default(),
            })
        });
        let meter = ConnMeter {
            ctx: &ctx,
            slot,
            counted: logged.as_deref().map(|l| &l.counted),
        };
        // The log line is written by a function, not a closure: a closure's
        // captures would stay in the task across the tunnel.
        // A TLS route: handshake first (no backend connection for a client that
        // never completes one), then relay through the record layer.
        let mut pre = pre;
        let tls = match &route.cfg.tls {
            None => None,
            Some(acc) => {
                let deadline = monoio::time::Instant::now() + route.cfg.timeouts.header;
                // What the edge read (after a PROXY header, or the ClientHello an
                // SNI peek chose this route by) belongs to the handshake, not to
                // the backend: rustls takes it first.
                let early = pre
                    .as_mut()
                    .map(|p| std::mem::take(&mut p.bytes))
                    .unwrap_or_default();
                let shaken = Box::pin(crate::tls::session::handshake(
                    &client,
                    acc.config.clone(),
                    deadline,
                    &early,
                ))
                .await;
                if early.capacity() > 0 {
                    ctx.bufs.put(early);
                }
                match shaken {
                    Ok(t) => {
                        acc.counters.handshake(t.resumed);
                        // Boxed: a tunnel's task holds its TLS state only while TLS.
                        Some(Box::new(RefCell::new(t)))
                    }
                    Err(e) => {
                        acc.counters.failed(e.reason());
                        tracing::debug!(route = %route.cfg.name, %peer, "TLS handshake failed: {e}");
                        log_line(
                            &ctx,
                            &route,
                            &peer,
                            logged.as_deref(),
                            "tls_handshake_failed",
                            None,
                            None,
                        );
                        return;
                    }
                }
            }
        };
        // Boxed: the connect state (timers, failover bookkeeping) is short-lived;
        // inline it would sit in every idle tunnel's task for the tunnel's whole life.
        let connecting = crate::worker::boxed(|| {
            connect::connect(
                &route,
                slot,
                client_hash(peer.ip()),
                || ctx.now_ms(),
                |_| None,
            )
        });
        let upstream = match connecting.await {
            Ok(u) => u,
            Err(e) => {
                slot.errors.add(1);
                if e.local_shortage() {
                    // Accepting more now would only close them the same way:
                    // leave them queued until fds are free.
                    ctx.pause_accepting(&e, crate::worker::UPSTREAM_SHORTAGE_PAUSE);
                }
                tracing::debug!(route = %route.cfg.name, %peer, "no backend: {e}");
                log_line(
                    &ctx,
                    &route,
                    &peer,
                    logged.as_deref(),
                    "no_backend",
                    None,
                    tls.as_deref(),
                );
                return;
            }
        };
        if let Some(utls) = &upstream.tls {
            // Bytes the edge read ahead (after a PROXY header) go to a TLS
            // backend inside the session (`send_proxy` and `tls` exclude each other).
            if let Some(p) = pre.as_mut().filter(|p| !p.bytes.is_empty()) {
                // Boxed: only these connections pay for its state.
                let r = Box::pin(crate::tls::session::write_all(
                    &upstream.stream,
                    utls,
                    &p.bytes,
                    route.cfg.timeouts.idle,
                ))
                .await;
                ctx.bufs.put(std::mem::take(&mut p.bytes));
                if let Err(e) = r {
                    slot.errors.add(1);
                    tracing::debug!(route = %route.cfg.name, %peer, "backend side: {e}");
                    log_line(
                        &ctx,
                        &route,
                        &peer,
                        logged.as_deref(),
                        "backend_error",
                        route.backends.get(upstream.backend).map(|b| b.cfg.addr),
                        tls.as_deref(),
                    );
                    return;
                }
            }
        } else if edge::tcp_upstream_needed(
            &route,
            upstream.backend,
            pre.as_deref().unwrap_or(&NO_PREAMBLE),
        ) {
            let pre = pre.take().map(|p| *p).unwrap_or_default();
            // Boxed: only edge connections pay for this state.
            let start = edge::tcp_upstream_start(
                &ctx,
                &route,
                upstream.backend,
                &client,
                &upstream.stream,
                peer.get(),
                pre,
            );
            if let Err(e) = Box::pin(start).await {
                slot.errors.add(1);
                tracing::debug!(route = %route.cfg.name, %peer, "backend side: {e}");
                log_line(
                    &ctx,
                    &route,
                    &peer,
                    logged.as_deref(),
                    "backend_error",
                    route.backends.get(upstream.backend).map(|b| b.cfg.addr),
                    tls.as_deref(),
                );
                return;
            }
        }
        // A route with `gateway`: the connection is a session the API can
        // list and close (others: `None`, nothing registered). Boxed: one
        // pointer in every tunnel's task, which sits just under mimalloc's
        // 1,024 B class (connection_task_sizes).
        let session = crate::gateway::tcp::TcpSession::open(
            &ctx,
            &route,
            peer.get(),
            std::os::fd::AsRawFd::as_raw_fd(&client),
            std::os::fd::AsRawFd::as_raw_fd(&upstream.stream),
        )
        .map(Box::new);
        let reason = if tls.is_some() || upstream.tls.is_some() {
            use crate::tls::relay::End;
            match Box::pin(crate::tls::relay::relay(
                &meter,
                End::new(&client, tls.as_deref()),
                End::new(&upstream.stream, upstream.tls.as_deref()),
                route.cfg.timeouts.idle,
            ))
            .await
            {
                Ok(()) => "closed",
                Err(crate::tls::relay::RelayEnd::Idle) => "idle_timeout",
                Err(crate::tls::relay::RelayEnd::Backend(e)) => {
                    slot.errors.add(1);
                    tracing::debug!(route = %route.cfg.name, %peer, "backend side: {e}");
                    "backend_error"
                }
                Err(e) => {
                    tracing::debug!(route = %route.cfg.name, %peer, "TLS client side: {e:?}");
                    "client_error"
                }
            }
        } else {
            match tunnel(
                &ctx.pipes,
                &meter,
                &client,
                &upstream.stream,
                route.cfg.timeouts.idle,
            )
            .await
            {
                Ok(_) => "closed",
                Err(TunnelEnd::Idle) => {
                    tracing::debug!(route = %route.cfg.name, %peer, "idle timeout, closing");
                    "idle_timeout"
                }
                Err(TunnelEnd::Client(e)) => {
                    tracing::debug!(route = %route.cfg.name, %peer, "client side: {e}");
                    "client_error"
                }
                Err(TunnelEnd::Backend(e)) => {
                    slot.errors.add(1);
                    tracing::debug!(route = %route.cfg.name, %peer, "backend side: {e}");
                    "backend_error"
                }
            }
        };
        let reason = match &session {
            Some(s) if s.closed_by_api() => "api_close",
            _ => reason,
        };
        // Unregistered before its sockets close (the registry names their fds).
        drop(session);
        log_line(
            &ctx,
            &route,
            &peer,
            logged.as_deref(),
            reason,
            route.backends.get(upstream.backend).map(|b| b.cfg.addr),
            tls.as_deref(),
        );
        // Two fds freed: if accepting paused for lack of fds, it may go on.
        drop(upstream);
        drop(client);
        drop(guard);
        ctx.resume_accepting();
    }
}

/// What a connection without a preamble has.
const NO_PREAMBLE: Preamble = Preamble {
    bytes: Vec::new(),
    dst: None,
};

/// A tcp connection's access log line, when its route logs.
/// A logging route's per-connection record: start time and byte counts.
struct TcpLog {
    started: Instant,
    counted: [Cell<u64>; 2],
}

#[allow(clippy::too_many_arguments)]
fn log_line(
    ctx: &WorkerCtx,
    route: &LiveRoute,
    peer: &Peer,
    logged: Option<&TcpLog>,
    reason: &str,
    upstream: Option<SocketAddr>,
    tls: Option<&RefCell<TlsConn>>,
) {
    let (
        Some(sink),
        Some(TcpLog {
            started: t,
            counted,
        }),
    ) = (route.log, logged)
    else {
        return;
    };
    let tls = tls.map(|c| c.borrow());
    let (tls_version, sni) = tls.as_ref().map_or((None, None), |c| c.log_fields());
    ctx.log.write(
        sink,
        &Record {
            time_ms: crate::accesslog::wall_ms(),
            kind: Kind::Tcp,
            route: &route.cfg.name,
            client: peer.get(),
            method: b"",
            target: b"",
            protocol: "tcp",
            status: 0,
            bytes_in: counted[0].get(),
            bytes_out: counted[1].get(),
            duration_us: t.elapsed().as_micros() as u64,
            upstream,
            upstream_ttfb_us: None,
            request_id: None,
            user_agent: None,
            referer: None,
            tls_version,
            sni,
            close_reason: Some(reason),
        },
    );
}
