//! ringmesh: a thread-per-core TCP/HTTP proxy and gateway on io_uring.
//!
//! ```text
//!  main thread: CLI, load + validate config, Engine::run, wait
//!     |
//!     +-- control thread: binds listeners, signals, reload, drain, API, sd_notify,
//!         backend processes, health checks, dashboard
//!     +-- workers (one per CPU, pinned): monoio runtime (io_uring, epoll fallback),
//!         one SO_REUSEPORT listener per route address, accept, then
//!           edge (only listeners with proxy_protocol / sni routes): PROXY
//!                 header -> client address; ClientHello SNI -> tcp route
//!           tls (routes with tls): handshake, then the paths below over the record layer
//!           tcp:  route -> balance -> connect -> tunnel (recv/send small, splice streams)
//!           http: per request: head -> Host -> route -> balance -> pooled or new
//!                 upstream -> rewritten head -> bodies (splice / chunked scan)
//!           (backends with tls: connect -> client handshake; pools keep the
//!                 session; bytes through the record layer instead of splice)
//!                 (HTTP/2 preface, or ALPN h2 over TLS: h2 connection, a task per
//!                 stream -> the same routes)
//!                 gateway route + 101: a session (frames walked both ways, pushes,
//!                 pings, closes; plain or TLS clients) in its own boxed future;
//!                 the API reaches it through a per-worker queue + wake
//!                 (tcp routes with gateway: sessions to list and close)
//!                shared: Arc<Live> snapshot, per-backend atomics, per-worker counters
//! ```
//!
//! Lexicon (one word per concept):
//! - **route**: what a listen address forwards, and to which backends.
//! - **backend**: one upstream address (optionally a process ringmesh starts).
//! - **worker**: an OS thread with its own runtime; owns its listeners and pools.
//! - **listener**: a worker's SO_REUSEPORT socket for one address.
//! - **client**: the peer that connected to a listener. **upstream**: our connection to a backend.
//! - **snapshot**: an immutable validated config; **live**: a snapshot plus runtime state.
//! - **drain**: stop accepting, let open connections finish.
//! - **generation**: the number of a published config; workers acknowledge
//!   the one they serve, so a reload knows when it is complete.
//! - **handover**: passing listening sockets to a new process (binary upgrade).
//! - **middleware**: a route's configured list of filters; **filter**: one
//!   element of it at run time (request, upstream request, response and
//!   logging phases); **chain**: a worker's built filters of one route.
//! - **access log**: one line per exchange or tcp connection, written off the request path.
//! - **head**: an HTTP message's start line and header fields; **exchange**:
//!   one request and its response.
//! - **stream**: one HTTP/2 request/response on a multiplexed connection.
//! - **session**: an upgraded WebSocket connection on a gateway route, with an
//!   id, a bound user, channels and settings (on a tcp route with `gateway`:
//!   a connection, listed and closed only); **push**: a message ringmesh
//!   puts into a session's stream; **publish**: a push to many sessions.
//!
//! Modules:
//! - [`config`]: config.json (GopherMesh-compatible) -> validated [`config::Snapshot`]; pure.
//! - [`balance`]: round_robin, least_conn, ip_hash; pure.
//! - [`route`]: Host -> route for http listeners (exact, wildcard, default); pure.
//! - [`shared`]: the only state the control thread and workers both touch.
//! - [`worker`]: threads, runtimes, listeners, accept loop.
//! - [`proxy`]: backend connect with failover, tunnels (buffered small messages, spliced streams).
//! - [`edge`]: before a route's normal path: PROXY protocol headers in and
//!   out, TLS passthrough routes chosen by the ClientHello's SNI.
//! - [`http`]: the HTTP/1.1 reverse proxy (pure head/rewrite/chunked core, and
//!   the per-connection data plane on top of it).
//! - [`tls`]: TLS termination and origination: certificates and SNI, the
//!   record layer over pooled buffers (rustls unbuffered API, server and
//!   client side), ALPN, the poll-based stream HTTP/2 runs on (server, and
//!   `h2` backends), the TLS relay of tcp routes, upstream TLS (`tls/client.rs`).
//! - [`accesslog`]: access log lines (JSON, combined), per-worker buffers, the writer thread.
//! - [`filter`]: per-route middleware chains (Pingora-style phases) and the built-ins.
//! - [`h2`]: HTTP/2 to clients (h2c prior knowledge, TLS with ALPN `h2`, any
//!   AsyncRead/AsyncWrite stream) on the `h2` crate over monoio poll-io; streams to HTTP/1.1
//!   backends or to h2c backends (gRPC), with the route's middleware and access log; flood limits.
//! - [`gateway`]: WebSocket sessions on gateway routes (frame reader, session
//!   data path, per-worker registries and command queues).
//! - [`engine`]: start-up and shutdown order.
//! - [`discovery`]: backends from DNS (SRV/A/AAAA) resolved on a side thread
//!   and published as backends through the reload machinery.
//! - [`fleet`]: routes from etcd (watched on a side thread, applied through
//!   the reload path) and the node registry; blocking HTTP or HTTPS (rustls
//!   client with etcd's CA and client certificate), never on a worker.
//! - [`control`]: the control thread's services: listeners, reload, API,
//!   sd_notify, supervisor (backend processes, logs), health checks, dashboard.
//! - [`cli`]: the CLI's API clients (`status`, `reload`, `logs`, `kill`): blocking, no runtime.
//! - [`alloc`]: the global allocator the binary installs (mimalloc, each
//!   block in the size class of the bytes asked for).
//! - [`sys`]: the raw syscalls (splice, pipes, accept4, recv/send, affinity), each `unsafe` justified.

pub mod accesslog;
pub mod alloc;
pub mod balance;
pub mod cli;
pub mod config;
pub mod control;
pub mod discovery;
pub mod edge;
pub mod engine;
pub mod filter;
pub mod fleet;
pub mod gateway;
pub mod h2;
pub mod http;
pub mod proxy;
pub mod route;
pub mod shared;
pub mod sys;
pub mod tls;
pub mod worker;

pub use config::{ConfigError, ConfigErrors, Snapshot};
pub use engine::{Engine, EngineError, EngineHandle, EngineOptions, IoMode};
