//! Per-worker keep-alive pool of idle upstream connections.
//!
//! Keyed by backend address; no locks (one worker owns it). A connection
//! goes back in only after a complete exchange with a response that allows
//! reuse and no stray bytes; before it comes out again, a non-blocking
//! `recv(MSG_PEEK)` checks that the backend has not closed it meanwhile. A
//! backend may still close it in the instant after that check: the exchange
//! retries an idempotent request once on a fresh connection for that case.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use monoio::net::TcpStream;

use crate::sys;

/// Most idle connections kept per backend address per worker.
pub const MAX_IDLE_PER_BACKEND: usize = 64;

/// Idle connections older than this are closed (shorter than the 60 s most
/// servers keep an idle connection, so we rarely race their close).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How often expired connections are swept out.
const SWEEP_EVERY_MS: u64 = 1_000;

struct Idle {
    stream: TcpStream,
    since_ms: u64,
}

/// Idle upstream connections of one worker.
#[derive(Default)]
pub struct UpstreamPool {
    idle: RefCell<HashMap<SocketAddr, Vec<Idle>>>,
    last_sweep_ms: Cell<u64>,
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("idle", &self.idle())
            .finish()
    }
}

impl UpstreamPool {
    /// The most recently parked live connection to `addr`, if any.
    pub fn take(&self, addr: SocketAddr, now_ms: u64) -> Option<TcpStream> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        let timeout = IDLE_TIMEOUT.as_millis() as u64;
        while let Some(c) = list.pop() {
            if now_ms.saturating_sub(c.since_ms) < timeout
                && sys::idle_socket_ok(c.stream.as_raw_fd())
            {
                return Some(c.stream);
            }
        }
        None
    }

    /// Parks a connection whose last exchange completed cleanly.
    pub fn put(&self, addr: SocketAddr, stream: TcpStream, now_ms: u64) {
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        if list.len() >= MAX_IDLE_PER_BACKEND {
            list.remove(0);
        }
        list.push(Idle {
            stream,
            since_ms: now_ms,
        });
    }

    /// Closes connections idle for longer than [`IDLE_TIMEOUT`] (at most once a second).
    pub fn sweep(&self, now_ms: u64) {
        if now_ms.saturating_sub(self.last_sweep_ms.get()) < SWEEP_EVERY_MS {
            return;
        }
        self.last_sweep_ms.set(now_ms);
        let timeout = IDLE_TIMEOUT.as_millis() as u64;
        let mut idle = self.idle.borrow_mut();
        idle.retain(|_, list| {
            list.retain(|c| now_ms.saturating_sub(c.since_ms) < timeout);
            !list.is_empty()
        });
    }

    /// Idle connections held right now.
    pub fn idle(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum()
    }

    /// Closes every idle connection (drain).
    pub fn clear(&self) {
        self.idle.borrow_mut().clear();
    }
}
