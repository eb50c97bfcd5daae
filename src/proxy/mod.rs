//! Forwarding: connecting to backends and moving bytes.

pub mod connect;
pub mod splice;
pub mod tcp;
