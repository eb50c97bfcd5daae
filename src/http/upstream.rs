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

use crate::proxy::connect::{Reused, UpTls};
use crate::sys;

/// Most idle connections kept per backend address per worker, unless the
/// config's `upstream_keepalive.max_idle` says otherwise.
pub const MAX_IDLE_PER_BACKEND: usize = 64;

/// Idle connections older than this are closed (shorter than the 60 s most
/// servers keep an idle connection, so we rarely race their close), unless
/// the config's `upstream_keepalive.idle_timeout` says otherwise.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Parked for less than this, a connection is handed to a retryable request
/// without probing it (see [`UpstreamPool::take`]).
pub const TRUST_FRESH: Duration = Duration::from_secs(1);

/// How often expired connections are swept out.
const SWEEP_EVERY_MS: u64 = 1_000;

struct Idle {
    stream: TcpStream,
    since_ms: u64,
}

/// An idle TLS connection: its socket and its session (buffers released).
struct IdleTls {
    stream: TcpStream,
    tls: UpTls,
    since_ms: u64,
}

/// Idle upstream connections of one worker.
pub struct UpstreamPool {
    idle: RefCell<HashMap<SocketAddr, Vec<Idle>>>,
    /// TLS backends' connections, apart: keyed by address and the
    /// backend's TLS setup (two routes may reach one address with different
    /// names or CAs), so plain backends' lookups never see them.
    idle_tls: RefCell<HashMap<(SocketAddr, u64), Vec<IdleTls>>>,
    last_sweep_ms: Cell<u64>,
    max_idle: Cell<usize>,
    timeout_ms: Cell<u64>,
}

impl Default for UpstreamPool {
    fn default() -> Self {
        UpstreamPool {
            idle: RefCell::default(),
            idle_tls: RefCell::default(),
            last_sweep_ms: Cell::new(0),
            max_idle: Cell::new(MAX_IDLE_PER_BACKEND),
            timeout_ms: Cell::new(IDLE_TIMEOUT.as_millis() as u64),
        }
    }
}

impl std::fmt::Debug for UpstreamPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamPool")
            .field("idle", &self.idle())
            .finish()
    }
}

impl UpstreamPool {
    /// Applies `upstream_keepalive` from the config (at start and on reload);
    /// lists over the new limit shrink at their next `put`, expired
    /// connections go at the next sweep.
    pub fn set_limits(&self, max_idle: usize, idle_timeout: Duration) {
        self.max_idle.set(max_idle);
        self.timeout_ms.set(idle_timeout.as_millis() as u64);
        if max_idle == 0 {
            self.clear();
        }
    }

    /// The most recently parked live connection to `addr`, if any.
    ///
    /// `retryable`: the caller retries on a fresh connection when this one
    /// turns out dead before answering. Then a connection parked less than
    /// [`TRUST_FRESH`] ago is handed out without the `MSG_PEEK` probe: under
    /// keep-alive load that probe is one syscall per request, and the retry
    /// covers the rare backend close in that window anyway. A non-retryable
    /// request (a body, a POST) always gets a probed connection.
    pub fn take(&self, addr: SocketAddr, now_ms: u64, retryable: bool) -> Option<TcpStream> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        let timeout = self.timeout_ms.get();
        let fresh = TRUST_FRESH.as_millis() as u64;
        while let Some(c) = list.pop() {
            let age = now_ms.saturating_sub(c.since_ms);
            if age < timeout
                && ((retryable && age < fresh) || sys::idle_socket_ok(c.stream.as_raw_fd()))
            {
                return Some(c.stream);
            }
        }
        None
    }

    /// Parks a connection whose last exchange completed cleanly.
    pub fn put(&self, addr: SocketAddr, stream: TcpStream, now_ms: u64) {
        let max = self.max_idle.get();
        if max == 0 {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        while list.len() >= max {
            list.remove(0);
        }
        list.push(Idle {
            stream,
            since_ms: now_ms,
        });
    }

    /// [`Self::take`] for a TLS backend whose setup has fingerprint `tls`.
    pub fn take_tls(
        &self,
        addr: SocketAddr,
        tls: u64,
        now_ms: u64,
        retryable: bool,
    ) -> Option<Reused> {
        let mut idle = self.idle_tls.borrow_mut();
        let list = idle.get_mut(&(addr, tls))?;
        let timeout = self.timeout_ms.get();
        let fresh = TRUST_FRESH.as_millis() as u64;
        while let Some(c) = list.pop() {
            let age = now_ms.saturating_sub(c.since_ms);
            // A record waiting on an idle TLS connection is a close_notify
            // or a stray: either way it is not reused.
            if age < timeout
                && ((retryable && age < fresh) || sys::idle_socket_ok(c.stream.as_raw_fd()))
            {
                return Some((c.stream, Some(c.tls)));
            }
        }
        None
    }

    /// [`Self::put`] for a TLS connection (only one whose session holds no
    /// leftover bytes).
    pub fn put_tls(&self, addr: SocketAddr, tls_key: u64, conn: Reused, now_ms: u64) {
        let max = self.max_idle.get();
        let (stream, Some(tls)) = conn else { return };
        if max == 0 || !tls.borrow().idle_clean() {
            return;
        }
        let mut idle = self.idle_tls.borrow_mut();
        let list = idle.entry((addr, tls_key)).or_default();
        while list.len() >= max {
            list.remove(0);
        }
        list.push(IdleTls {
            stream,
            tls,
            since_ms: now_ms,
        });
    }

    /// Closes connections idle for longer than [`IDLE_TIMEOUT`] (at most once a second).
    pub fn sweep(&self, now_ms: u64) {
        if now_ms.saturating_sub(self.last_sweep_ms.get()) < SWEEP_EVERY_MS {
            return;
        }
        self.last_sweep_ms.set(now_ms);
        let timeout = self.timeout_ms.get();
        let mut idle = self.idle.borrow_mut();
        idle.retain(|_, list| {
            list.retain(|c| now_ms.saturating_sub(c.since_ms) < timeout);
            !list.is_empty()
        });
        let mut tls = self.idle_tls.borrow_mut();
        if !tls.is_empty() {
            tls.retain(|_, list| {
                list.retain(|c| now_ms.saturating_sub(c.since_ms) < timeout);
                !list.is_empty()
            });
        }
    }

    /// Idle connections held right now.
    pub fn idle(&self) -> usize {
        self.idle.borrow().values().map(Vec::len).sum::<usize>()
            + self.idle_tls.borrow().values().map(Vec::len).sum::<usize>()
    }

    /// Closes every idle connection (drain).
    pub fn clear(&self) {
        self.idle.borrow_mut().clear();
        self.idle_tls.borrow_mut().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parks_checks_and_expires_connections() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let connect = || async {
                let s = crate::proxy::connect::connect_timeout(addr, Duration::from_secs(2))
                    .await
                    .unwrap();
                let (peer, _) = l.accept().unwrap();
                (s, peer)
            };
            let pool = UpstreamPool::default();
            assert!(pool.take(addr, 0, false).is_none());

            // Alive: comes back, most recent first.
            let (a, _pa) = connect().await;
            let (b, _pb) = connect().await;
            let b_fd = b.as_raw_fd();
            pool.put(addr, a, 0);
            pool.put(addr, b, 10);
            assert_eq!(pool.idle(), 2);
            let got = pool.take(addr, 20, false).unwrap();
            assert_eq!(got.as_raw_fd(), b_fd);
            pool.put(addr, got, 20);

            // Closed by the backend, or with stray bytes waiting: never handed out.
            let (c, pc) = connect().await;
            let (d, mut pd) = connect().await;
            std::io::Write::write_all(&mut pd, b"junk").unwrap();
            drop(pc);
            pool.clear();
            pool.put(addr, c, 0);
            pool.put(addr, d, 0);
            std::thread::sleep(Duration::from_millis(50));
            assert!(pool.take(addr, 1, false).is_none());
            assert_eq!(pool.idle(), 0);

            // Expired: swept, and not handed out either.
            let (e, _pe) = connect().await;
            pool.put(addr, e, 1_000);
            let late = 1_000 + IDLE_TIMEOUT.as_millis() as u64;
            assert!(pool.take(addr, late, true).is_none());
            let (f, _pf) = connect().await;
            pool.put(addr, f, 1_000);
            pool.sweep(late);
            assert_eq!(pool.idle(), 0);

            // At most MAX_IDLE_PER_BACKEND per address.
            let mut peers = Vec::new();
            for _ in 0..MAX_IDLE_PER_BACKEND + 3 {
                let (s, p) = connect().await;
                peers.push(p);
                pool.put(addr, s, 5_000);
            }
            assert_eq!(pool.idle(), MAX_IDLE_PER_BACKEND);
        });
    }
}
