//! tcp routes with `gateway`: each connection is a session the API can
//! list and close (no framing to push into).

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::Arc;

use crate::shared::LiveRoute;
use crate::worker::WorkerCtx;

use super::session::{Reason, Session};

/// A tcp route's connection registered as a session (list and close) while
/// it lives; dropping it unregisters and counts the close.
pub struct TcpSession<'a> {
    ctx: &'a WorkerCtx,
    s: Rc<Session>,
}

impl<'a> TcpSession<'a> {
    /// Registers the connection `client` (from `peer`) and its `upstream`
    /// on a tcp route with `gateway`; `None` on other routes (they pay nothing).
    pub fn open(
        ctx: &'a WorkerCtx,
        route: &Arc<LiveRoute>,
        peer: SocketAddr,
        client: RawFd,
        upstream: RawFd,
    ) -> Option<TcpSession<'a>> {
        route.cfg.gateway?;
        let slot = route.slots.get(ctx.id)?;
        let n = ctx.sessions.next();
        let s = Rc::new(Session::new(ctx, n, route, peer, Some((client, upstream))));
        ctx.sessions.insert(s.clone());
        slot.gateway.opened.add(1);
        Some(TcpSession { ctx, s })
    }

    /// Whether the API closed it (the access log's close reason).
    pub fn closed_by_api(&self) -> bool {
        self.s.closing()
    }
}

impl Drop for TcpSession<'_> {
    fn drop(&mut self) {
        self.ctx.sessions.remove(self.s.n);
        let why = self.s.requested_close().unwrap_or(Reason::Client);
        if let Some(slot) = self.s.route.slots.get(self.ctx.id) {
            if let Some(c) = slot.gateway.closed.get(why as usize) {
                c.add(1);
            }
        }
    }
}
