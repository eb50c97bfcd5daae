//! A TCP route end to end: accepted client -> backend -> spliced tunnel.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use monoio::net::TcpStream;

use crate::balance::client_hash;
use crate::http::buf::BufPool;
use crate::proxy::connect;
use crate::proxy::splice::{tunnel, Meter, TunnelEnd};
use crate::shared::{LiveRoute, RouteSlot};
use crate::worker::timer::CoarseTimers;
use crate::worker::{ConnGuard, WorkerCtx};

/// Counts a tunnel's bytes into its route's slot and reads the worker's clock.
pub(crate) struct ConnMeter<'a> {
    pub(crate) ctx: &'a WorkerCtx,
    pub(crate) slot: &'a RouteSlot,
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
pub async fn serve(
    ctx: Rc<WorkerCtx>,
    client: TcpStream,
    peer: SocketAddr,
    route: Arc<LiveRoute>,
    guard: ConnGuard,
) {
    let Some(slot) = route.slots.get(ctx.id) else {
        return;
    };
    let meter = ConnMeter { ctx: &ctx, slot };
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
            return;
        }
    };
    match tunnel(
        &ctx.pipes,
        &meter,
        &client,
        &upstream.stream,
        route.cfg.timeouts.idle,
    )
    .await
    {
        Ok(_) => {}
        Err(TunnelEnd::Idle) => {
            tracing::debug!(route = %route.cfg.name, %peer, "idle timeout, closing");
        }
        Err(TunnelEnd::Client(e)) => {
            tracing::debug!(route = %route.cfg.name, %peer, "client side: {e}");
        }
        Err(TunnelEnd::Backend(e)) => {
            slot.errors.add(1);
            tracing::debug!(route = %route.cfg.name, %peer, "backend side: {e}");
        }
    }
    // Two fds freed: if accepting paused for lack of fds, it may go on.
    drop(upstream);
    drop(client);
    drop(guard);
    ctx.resume_accepting();
}
