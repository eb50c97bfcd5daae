//! The control plane: one thread with its own (epoll) monoio runtime. It owns
//! signals, shutdown order and reloads, binds every listener, talks to
//! systemd and serves the API; it sees the workers only through `crate::shared`.

pub mod api;
pub mod listeners;
pub mod reload;
pub mod systemd;
pub mod upgrade;
