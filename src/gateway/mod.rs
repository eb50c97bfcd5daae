//! The long-connection gateway: on an http route with `gateway`, each
//! upgraded WebSocket connection becomes a **session** that the API can list,
//! bind, push to and close, with heartbeats, a message size limit and a
//! bounded send queue.
//!
//! - [`channels`]: a session's channel names, compact.
//! - [`frame`]: RFC 6455 frame reader/writer; pure.
//! - [`handshake`]: the session id on the upgrade request, the binding
//!   headers taken off the backend's 101.
//! - [`record`]: a session's record (registry, API, pushes).
//! - [`session`]: one session's data path (frames both ways, pushes, pings,
//!   closes).
//! - [`stats`]: close reasons and per-route counters (metrics).
//! - [`tcp`]: a tcp route's connections as sessions (list and close).
//! - [`hub`]: per-worker session registries and the command queues the
//!   control thread reaches them through.
//!
//! Routes without `gateway` never enter this module: their upgrades stay
//! blind splice tunnels.

pub mod channels;
pub mod frame;
pub mod handshake;
pub mod hub;
mod idle;
mod record;
pub mod session;
mod sockio;
pub mod stats;
pub mod tcp;

use crate::shared::LiveRoute;
use crate::worker::WorkerCtx;

pub use handshake::Pending;
pub use sockio::ClientIo;

/// For an upgrade request on a gateway route, after its head was rewritten
/// into `out`: adds the session id when it is a WebSocket upgrade and
/// returns the pending session (else `None`: a blind tunnel, as today).
pub fn prepare(ctx: &WorkerCtx, out: &mut Vec<u8>, route: &LiveRoute) -> Option<Box<Pending>> {
    route.cfg.gateway?;
    let n = ctx.sessions.next();
    let id = ctx.shared.gateway.id(ctx.id, n);
    if !handshake::prepare_request(out, &id) {
        return None;
    }
    Some(Box::new(Pending {
        id,
        n,
        ..Pending::default()
    }))
}
