//! sd_notify without libsystemd: datagrams to `$NOTIFY_SOCKET`.
//!
//! The protocol is a newline-separated list of `KEY=value` in one datagram to
//! the unix socket named by `NOTIFY_SOCKET` (a path, or `@name` for Linux's
//! abstract namespace). ringmesh sends `READY=1` once every worker has bound
//! every listener, `RELOADING=1` with `MONOTONIC_USEC` and then `READY=1`
//! around a reload (systemd's `Type=notify-reload` contract, also fine for
//! `Type=notify`), `STOPPING=1` at shutdown, and `WATCHDOG=1` every half
//! `WATCHDOG_USEC` when the unit sets `WatchdogSec`. Outside systemd every
//! call does nothing.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::time::Duration;

use crate::sys;

/// A connection to the service manager, or nothing.
#[derive(Debug, Default)]
pub struct Notifier {
    target: Option<(UnixDatagram, UnixAddr)>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
    pub fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|p| {
            let p = p.to_string_lossy().into_owned();
            let addr = match p.strip_prefix('@') {
                Some(name) => UnixAddr::from_abstract_name(name.as_bytes()),
                None if p.starts_with('/') => UnixAddr::from_pathname(&p),
                None => {
                    tracing::warn!("NOTIFY_SOCKET={p:?} is neither a path nor @abstract; ignored");
                    return None;
                }
            };
            let sock = UnixDatagram::unbound();
            match (addr, sock) {
                (Ok(a), Ok(s)) => Some((s, a)),
                (Err(e), _) | (_, Err(e)) => {
                    tracing::warn!("NOTIFY_SOCKET={p:?}: {e}; sd_notify disabled");
                    None
                }
            }
        });
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us)
            .map(Duration::from_micros);
        Notifier { target, watchdog }
    }

    /// True when a service manager listens.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// How often to send `WATCHDOG=1` (half the manager's timeout), if asked to.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.target.as_ref()?;
        self.watchdog.map(|d| d / 2)
    }

    /// Sends one message (`KEY=value` lines); failures are logged, not fatal.
    pub fn send(&self, msg: &str) {
        if let Some((sock, addr)) = &self.target {
            if let Err(e) = sock.send_to_addr(msg.as_bytes(), addr) {
                tracing::debug!("sd_notify {msg:?} failed: {e}");
            }
        }
    }

    pub fn ready(&self) {
        self.send("READY=1\nSTATUS=serving");
    }

    pub fn reloading(&self) {
        if self.enabled() {
            self.send(&format!(
                "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading",
                sys::monotonic_usec()
            ));
        }
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=draining connections");
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }
}
