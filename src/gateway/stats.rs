//! Why sessions end and the per-route gateway counters.

use crate::shared::Counter;

/// Why a session ended (a metrics label each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Client = 0,
    Backend = 1,
    BackendFailed = 2,
    HeartbeatTimeout = 3,
    TooBig = 4,
    Protocol = 5,
    SlowConsumer = 6,
    Api = 7,
    Drain = 8,
}

pub const REASONS: [&str; 9] = [
    "client",
    "backend",
    "backend_failed",
    "heartbeat_timeout",
    "too_big",
    "protocol",
    "slow_consumer",
    "api",
    "drain",
];

/// Per-worker, per-route gateway counters (in [`crate::shared::RouteSlot`]).
#[derive(Default, Debug)]
pub struct RouteCounters {
    pub opened: Counter,
    /// Indexed by [`Reason`].
    pub closed: [Counter; 9],
    /// Pushed messages queued for a client.
    pub pushed: Counter,
    /// Pushed messages refused (queue full or session closing).
    pub dropped: Counter,
    pub heartbeat_timeouts: Counter,
}

impl RouteCounters {
    /// Carries totals over a reload (single writer: the new slot is not live yet).
    pub fn carry(&self, old: &RouteCounters) {
        self.opened.add(old.opened.get());
        for (n, o) in self.closed.iter().zip(old.closed.iter()) {
            n.add(o.get());
        }
        self.pushed.add(old.pushed.get());
        self.dropped.add(old.dropped.get());
        self.heartbeat_timeouts.add(old.heartbeat_timeouts.get());
    }
}
