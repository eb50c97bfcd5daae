//! Upgrades (WebSocket and friends): after the backend's 101 has been
//! forwarded, both connections become a spliced tunnel (or, for a WebSocket
//! on a gateway route, a session: `crate::gateway::session`, for TLS
//! clients too). Never before: until a 101 arrives, bytes after the request
//! head stay buffered as a possible next request (a tunnel opened early lets
//! a client smuggle requests past the proxy, Pingora CVE-2026-2833).

use std::sync::Arc;

use crate::proxy::connect::{OwnedUpstream, Upstream};
use crate::proxy::splice::{tunnel, TunnelEnd};
use crate::proxy::tcp::ConnMeter;
use crate::shared::{LiveRoute, RouteSlot};
use crate::worker::WorkerCtx;

use super::conn::Client;
use super::exchange::{Outcome, Scratch};

/// After a forwarded 101: bytes the client sent past its request go up, then
/// both connections become a spliced tunnel with the route's idle timeout.
pub(super) async fn upgraded(
    ctx: &WorkerCtx,
    client: &mut Client,
    s: &mut Scratch,
    mut up: Upstream<'_>,
    route: &Arc<LiveRoute>,
    slot: &RouteSlot,
) -> Outcome {
    // Gateway sessions walk the backend's frames on the raw socket: a TLS
    // backend gets the plain tunnel below.
    if let Some(pending) = s.gw.take().filter(|_| up.tls.is_none()) {
        let early = std::mem::take(&mut client.buf);
        for b in [&mut s.ubuf, &mut s.out] {
            ctx.bufs.put(std::mem::take(b));
        }
        // A session may live for hours: hold no header spans meanwhile.
        s.spans = Vec::new();
        return Outcome::Session(Box::new(SessionStart {
            up: up.into_owned(route.clone()),
            route: route.clone(),
            pending,
            early,
        }));
    }
    let t = route.cfg.timeouts;
    if !client.buf.is_empty() {
        let len = client.buf.len();
        if up
            .io(&client.cancel)
            .write_all(&mut client.buf, 0..len, t.response)
            .await
            .is_err()
        {
            return Outcome::Drop;
        }
        slot.bytes_in.add(len as u64);
        client.buf.clear();
    }
    // The tunnel holds no buffers: give them back for its (possibly long) life.
    for b in [&mut client.buf, &mut s.ubuf, &mut s.out] {
        ctx.bufs.put(std::mem::take(b));
    }
    // Nor the canceller: it waits on readiness (no op of ours in flight).
    client.cancel.release();
    let counted: [std::cell::Cell<u64>; 2] = Default::default();
    let meter = ConnMeter {
        ctx,
        slot,
        counted: s.log.on.then_some(&counted),
    };
    let reason = if client.tls.is_some() || up.tls.is_some() {
        // TLS on either side: the tunnel decrypts and encrypts instead of splicing.
        use crate::tls::relay::End;
        for tls in [client.tls.as_deref(), up.tls.as_deref()]
            .into_iter()
            .flatten()
        {
            tls.borrow_mut().release();
        }
        let (c, u) = (
            End::new(&client.stream, client.tls.as_deref()),
            End::new(&up.stream, up.tls.as_deref()),
        );
        match crate::tls::relay::relay(&meter, c, u, t.idle).await {
            Ok(()) => "closed",
            Err(crate::tls::relay::RelayEnd::Backend(e)) => {
                slot.errors.add(1);
                tracing::debug!(route = %route.cfg.name, peer = %client.peer, "upgraded backend side: {e}");
                "backend_error"
            }
            Err(crate::tls::relay::RelayEnd::Idle) => "idle_timeout",
            Err(e) => {
                tracing::debug!(route = %route.cfg.name, peer = %client.peer, "upgraded TLS client: {e:?}");
                "client_error"
            }
        }
    } else {
        match tunnel(&ctx.pipes, &meter, &client.stream, &up.stream, t.idle).await {
            Ok(_) => "closed",
            Err(TunnelEnd::Idle) => {
                tracing::debug!(route = %route.cfg.name, peer = %client.peer, "upgraded connection idle, closing");
                "idle_timeout"
            }
            Err(TunnelEnd::Client(e)) => {
                tracing::debug!(route = %route.cfg.name, peer = %client.peer, "upgraded client side: {e}");
                "client_error"
            }
            Err(TunnelEnd::Backend(e)) => {
                slot.errors.add(1);
                tracing::debug!(route = %route.cfg.name, peer = %client.peer, "upgraded backend side: {e}");
                "backend_error"
            }
        }
    };
    // The access log line of an upgraded exchange covers its tunnel.
    s.log.close_reason = Some(reason);
    s.log.bytes_in += counted[0].get();
    s.log.bytes_out += counted[1].get();
    Outcome::Drop
}

/// What a gateway session takes over from its upgrade request: the session
/// runs in its own boxed future once the request's (several KiB of
/// exchange state) is gone, so an idle session holds only its own.
pub(super) struct SessionStart {
    up: OwnedUpstream,
    route: Arc<LiveRoute>,
    pending: Box<crate::gateway::Pending>,
    /// Client bytes that came behind the upgrade request.
    early: Vec<u8>,
}

/// Runs a gateway session on the connection's client until it ends. Not an
/// `async fn`: the future keeps the upstream and the route (which the
/// session borrows), not a second copy of everything it was started with.
pub(super) fn session<'a>(
    ctx: &'a WorkerCtx,
    client: &'a Client,
    st: SessionStart,
) -> impl std::future::Future<Output = ()> + 'a {
    if let Some(t) = &client.tls {
        t.borrow_mut().release();
    }
    // The backend's 101 was read with the client's canceller (176 B with
    // its op set); the session's ops are readiness waits, which never use
    // it, and none is in flight now.
    client.cancel.release();
    let SessionStart {
        up,
        route,
        pending,
        early,
    } = st;
    async move {
        let conn = crate::gateway::session::Conn {
            ctx,
            client: crate::gateway::ClientIo {
                stream: &client.stream,
                tls: client.tls.as_deref(),
            },
            peer: client.peer.get(),
            backend: &up.stream,
            route: &route,
        };
        crate::gateway::session::run(conn, pending, early).await;
    }
}
