//! The control plane: one thread with its own (epoll) monoio runtime. It owns
//! signals and shutdown order and serves the status API; it sees the workers
//! only through `crate::shared`.

pub mod api;
pub mod dashboard;
pub mod health;
pub mod logs;
pub mod procs_api;
pub mod supervisor;
