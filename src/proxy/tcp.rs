//! A TCP route end to end: accepted client -> backend -> spliced tunnel.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use std::cell::Cell;

use monoio::net::TcpStream;
use monoio::time::Instant;

use crate::accesslog::{Kind, Record};

use crate::balance::client_hash;
use crate::proxy::connect;
use crate::proxy::splice::{tunnel, Meter, TunnelEnd};
use crate::shared::{LiveRoute, RouteSlot};
use crate::worker::timer::CoarseTimers;
use crate::worker::WorkerCtx;

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
}

/// Serves one client connection of a tcp route.
pub async fn serve(ctx: Rc<WorkerCtx>, client: TcpStream, peer: SocketAddr, route: Arc<LiveRoute>) {
    let Some(slot) = route.slots.get(ctx.id) else {
        return;
    };
    // Access log: the start time and byte counts, only when the route logs.
    let counted: [Cell<u64>; 2] = Default::default();
    let started = route.log.map(|_| Instant::now());
    let meter = ConnMeter {
        ctx: &ctx,
        slot,
        counted: route.log.map(|_| &counted),
    };
    let log = |reason: &str, upstream: Option<SocketAddr>| {
        if let (Some(sink), Some(t)) = (route.log, started) {
            ctx.log.write(
                sink,
                &Record {
                    time_ms: crate::accesslog::wall_ms(),
                    kind: Kind::Tcp,
                    route: &route.cfg.name,
                    client: peer,
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
                    tls_version: None,
                    sni: None,
                    close_reason: Some(reason),
                },
            );
        }
    };
    // Boxed: the connect state (timers, failover bookkeeping) is short-lived;
    // inline it would sit in every idle tunnel's task for the tunnel's whole life.
    let connecting = Box::pin(connect::connect(
        &route,
        slot,
        client_hash(peer.ip()),
        || ctx.now_ms(),
        |_| None,
    ));
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
            log("no_backend", None);
            return;
        }
    };
    let reason = match tunnel(
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
    };
    log(
        reason,
        route.backends.get(upstream.backend).map(|b| b.cfg.addr),
    );
    // Two fds freed: if accepting paused for lack of fds, it may go on.
    drop(upstream);
    drop(client);
    ctx.resume_accepting();
}
