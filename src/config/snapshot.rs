//! The validated, immutable model of a config file.
//!
//! Workers never see JSON: the control side turns a file into a [`Snapshot`] once
//! (see `validate.rs`) and hands the result to the data plane. Everything here is
//! plain data; runtime state (counters, health, balancer cursors) lives in
//! `crate::shared`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use super::edge::{ListenerEdge, RouteEdge, SendProxy};
use crate::route::HostTable;

/// Wire protocol a route speaks on its listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 reverse proxy (GopherMesh's default).
    Http,
    /// Opaque TCP tunnel, forwarded with splice.
    Tcp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Tcp => "tcp",
        }
    }
}

/// How a route chooses a backend for a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastConn,
    IpHash,
}

impl Balance {
    pub fn as_str(self) -> &'static str {
        match self {
            Balance::RoundRobin => "round_robin",
            Balance::LeastConn => "least_conn",
            Balance::IpHash => "ip_hash",
        }
    }
}

/// Per-route connection timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Upper bound for one TCP connect to a backend.
    pub connect: Duration,
    /// A tunnel with no bytes in either direction for this long is closed
    /// (the long-connection gate's heartbeat timeout).
    pub idle: Duration,
    /// http: a request head must arrive completely within this time of its
    /// first byte (of the connection, for the first request); else 408 and close.
    /// Bounds how long a slowloris client can hold a connection.
    pub header: Duration,
    /// http: how long a client connection may sit idle between requests.
    pub keepalive: Duration,
    /// http: how long the backend may take to send its response head, and the
    /// longest stall while a body moves in either direction; else 504 (or close).
    pub response: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(5),
            idle: Duration::from_secs(600),
            header: Duration::from_secs(10),
            keepalive: Duration::from_secs(60),
            response: Duration::from_secs(60),
        }
    }
}

/// Connection limits. Past one, a new connection is refused cleanly (http:
/// 503 with `Retry-After`; tcp: closed) and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// Open client connections (None: unlimited).
    pub max_connections: Option<u32>,
    /// Open client connections from one IP address (top level only).
    pub max_connections_per_ip: Option<u32>,
}

/// The per-worker pool of idle upstream (backend) connections of HTTP routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamKeepalive {
    /// Idle connections kept per backend address per worker (0: no pooling).
    pub max_idle: usize,
    /// An idle connection older than this is closed, not reused (keep it
    /// below the backends' own keep-alive timeout).
    pub idle_timeout: Duration,
}

impl Default for UpstreamKeepalive {
    fn default() -> Self {
        UpstreamKeepalive {
            max_idle: 64,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// One upstream a route forwards to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub name: String,
    /// Command that starts the backend process; `None` for a plain address
    /// (GopherMesh's empty or `"internal"` cmd).
    pub cmd: Option<String>,
    pub args: Vec<String>,
    pub host: String,
    pub port: u16,
    /// `host:port` resolved once, at validation time.
    pub addr: SocketAddr,
    /// How long a cold start may take until `addr` accepts: the backend's
    /// `ready_timeout`, else its route's, else [`DEFAULT_READY_TIMEOUT`].
    pub ready_timeout: Duration,
    /// `send_proxy`: a PROXY protocol header first on each upstream connection.
    pub send_proxy: Option<SendProxy>,
    /// Share of new connections relative to the others (round_robin,
    /// least_conn); `weight` in the file, or an SRV record's weight.
    pub weight: u32,
    /// SRV priority: only the lowest-numbered tier with an available backend
    /// gets connections (0 for static backends).
    pub priority: u16,
    /// Expanded from a `discover` entry by DNS (not in the file).
    pub discovered: bool,
    /// `"protocol": "h2c"`: HTTP/2 with prior knowledge to this backend (a
    /// per-worker pool of multiplexed connections) instead of HTTP/1.1.
    pub h2c: bool,
    /// `tls` (or `"protocol": "h2"`): upstream connections speak TLS
    /// (see `config/upstream_tls.rs`); `None` keeps the plain path.
    pub tls: Option<std::sync::Arc<crate::tls::client::ClientTls>>,
}

/// How long a started backend process may take to accept connections.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Active health checks of a route's backends (run by the control thread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// http routes: `GET <path>` must answer `expect_status`; `None`: a TCP connect is the check.
    pub path: Option<String>,
    pub expect_status: u16,
    /// Time between two checks of one backend.
    pub interval: Duration,
    /// Upper bound for one check (connect, and the response head for `path`).
    pub timeout: Duration,
    /// Consecutive successes that make an unhealthy backend healthy again.
    pub rise: u32,
    /// Consecutive failures that make a backend unhealthy.
    pub fall: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            path: None,
            expect_status: 200,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            rise: 2,
            fall: 3,
        }
    }
}

/// One route: what a listener forwards, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The key of the route in `routes` (a port, `host:port`, or an alias).
    pub key: String,
    pub name: String,
    pub protocol: Protocol,
    pub balance: Balance,
    pub listen: SocketAddr,
    /// Host names this route answers (http only); empty means "default route of its port".
    pub hosts: Vec<String>,
    pub backends: Vec<Backend>,
    pub timeouts: Timeouts,
    /// No traffic (no open and no new upstream connection) for this long stops
    /// the route's backend processes ("napping"); the next connection starts them.
    pub idle_timeout: Option<Duration>,
    /// Active health checks; `None` when off (no `health`, or `"health": false`).
    pub health: Option<HealthCheck>,
    /// `max_connections` of this route.
    pub limits: Limits,
    /// `tls`: certificates loaded and checked (see `config/tls.rs`).
    pub tls: Option<Arc<crate::tls::Acceptor>>,
    /// `redirect_https`: answer every request with a 308 to https.
    pub redirect_https: bool,
    /// `hsts`: Strict-Transport-Security value added to responses (TLS routes).
    pub hsts: Option<String>,
    /// `proxy_protocol` and `sni`.
    pub edge: RouteEdge,
    /// `access_log`: this route's override of the top-level log.
    pub access_log: super::access_log::RouteLog,
    /// `middleware`: the route's filter chain, in request order (http only).
    pub middleware: Vec<super::middleware::Middleware>,
    /// `discover` entries of `backends`: DNS names that expand into backends
    /// (resolved on a side thread, see `crate::discovery`).
    pub discover: Vec<super::discover::Discover>,
    /// `http2`: HTTP/2 to clients and its limits (`None`: off; http routes only).
    pub http2: Option<super::Http2>,
    /// WebSocket sessions (`gateway`); `None`: upgrades are blind tunnels.
    pub gateway: Option<super::gateway::Gateway>,
}

/// A listening address and the routes behind it (indices into `Snapshot::routes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    pub addr: SocketAddr,
    pub protocol: Protocol,
    pub routes: Vec<usize>,
    /// http: Host -> route (indices into `Snapshot::routes`).
    pub hosts: HostTable,
    /// http: the strictest `timeouts.header` of its routes (the route of a
    /// request is only known once its head has arrived).
    pub header_timeout: Duration,
    /// TLS termination (the `tls` of the port's first route).
    pub tls: Option<Arc<crate::tls::Acceptor>>,
    /// PROXY protocol and SNI routing before the route is known.
    pub edge: ListenerEdge,
    /// http: the strictest `http2` of its routes (`None`: no route has it on).
    pub http2: Option<super::Http2>,
}

/// Where the status API and dashboard listen; `port == None` means headless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dashboard {
    pub host: String,
    pub port: Option<u16>,
}

/// A whole validated config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub service_name: String,
    pub dashboard: Dashboard,
    pub trusted_origins: Vec<String>,
    /// Bearer token the API requires (all but `/healthz`); `RINGMESH_API_TOKEN` overrides it.
    pub api_token: Option<String>,
    /// GopherMesh's worker-role port; kept for compatibility, unused by ringmesh.
    pub internal_port: Option<u16>,
    /// Worker threads; 0 means one per online CPU.
    pub workers: usize,
    /// listen(2) backlog of every listener.
    pub backlog: u32,
    /// How long open connections may finish after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// After SIGTERM, how long `/readyz` answers 503 while listeners keep
    /// accepting, before the drain starts (0: drain at once).
    pub shutdown_delay: Duration,
    /// Capacity of each splice pipe (F_SETPIPE_SZ).
    pub pipe_size: usize,
    /// `busy_poll`: workers poll with a zero timeout instead of sleeping
    /// (HAProxy's `busy-polling`): lower latency on VMs for a whole CPU
    /// each (`worker::busy`).
    pub busy_poll: bool,
    /// Process-wide `max_connections` and `max_connections_per_ip`.
    pub limits: Limits,
    /// `upstream_keepalive`: the idle upstream connection pool.
    pub upstream_keepalive: UpstreamKeepalive,
    /// `access_log`: the top-level access log (routes inherit it).
    pub access_log: Option<super::access_log::AccessLog>,
    /// `config_source`: routes from etcd instead of this file (see `crate::fleet`).
    pub config_source: Option<super::source::ConfigSource>,
    pub routes: Vec<Route>,
    pub listeners: Vec<ListenerSpec>,
}
