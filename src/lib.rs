//! ringmesh: a thread-per-core TCP/HTTP proxy and gateway on io_uring.
//!
//! ```text
//!  main thread: CLI, load + validate config, Engine::run, wait
//!     |
//!     +-- control thread: binds listeners, signals, reload, drain, API, sd_notify,
//!         backend processes, health checks, dashboard
//!     +-- workers (one per CPU, pinned): monoio runtime (io_uring, epoll fallback),
//!         one SO_REUSEPORT listener per route address, accept, then
//!           tcp:  route -> balance -> connect -> tunnel (recv/send small, splice streams)
//!           http: per request: head -> Host -> route -> balance -> pooled or new
//!                 upstream -> rewritten head -> bodies (splice / chunked scan)
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
//! - **head**: an HTTP message's start line and header fields; **exchange**:
//!   one request and its response.
//!
//! Modules:
//! - [`config`]: config.json (GopherMesh-compatible) -> validated [`config::Snapshot`]; pure.
//! - [`balance`]: round_robin, least_conn, ip_hash; pure.
//! - [`route`]: Host -> route for http listeners (exact, wildcard, default); pure.
//! - [`shared`]: the only state the control thread and workers both touch.
//! - [`worker`]: threads, runtimes, listeners, accept loop.
//! - [`proxy`]: backend connect with failover, tunnels (buffered small messages, spliced streams).
//! - [`http`]: the HTTP/1.1 reverse proxy (pure head/rewrite/chunked core, and
//!   the per-connection data plane on top of it).
//! - [`engine`]: start-up and shutdown order.
//! - [`control`]: the control thread's services: listeners, reload, API,
//!   sd_notify, supervisor (backend processes, logs), health checks, dashboard.
//! - [`cli`]: the CLI's API clients (`status`, `reload`, `logs`, `kill`): blocking, no runtime.
//! - [`sys`]: the raw syscalls (splice, pipes, accept4, recv/send, affinity), each `unsafe` justified.

pub mod balance;
pub mod cli;
pub mod config;
pub mod control;
pub mod engine;
pub mod http;
pub mod proxy;
pub mod route;
pub mod shared;
pub mod sys;
pub mod worker;

pub use config::{ConfigError, ConfigErrors, Snapshot};
pub use engine::{Engine, EngineError, EngineHandle, EngineOptions, IoMode};
