//! The control plane: one thread with its own (epoll) monoio runtime. It owns
//! signals, shutdown order and reloads, binds every listener, talks to
//! systemd and serves the API; it sees the workers only through `crate::shared`.

pub mod api;
pub mod dashboard;
pub mod discovery;
pub mod edge_metrics;
pub mod fleet;
pub mod h2_metrics;
pub mod health;
pub mod listeners;
pub mod logs;
pub mod middleware_metrics;
pub mod procs_api;
pub mod reload;
pub mod sessions_api;
pub mod status;
pub mod supervisor;
pub mod systemd;
pub mod upgrade;
