//! The long-connection gateway (WebSocket sessions): see `frame` for the
//! wire format.

pub mod frame;
