//! Filters of an embedder's own code, registered by name and referenced
//! from a route's `middleware` list as `{"type": "name", ...}`.
//!
//! A factory turns the middleware's JSON object into a filter. It runs once
//! when the config is validated (its error is reported with the entry's
//! JSON path) and once per worker per config snapshot, never per request.
//! Register before the config is parsed (`ringmesh::filter::register`, or
//! [`crate::Engine::filter`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

use super::Filter;

/// Builds a filter from its middleware entry (the whole JSON object).
pub type Factory = Arc<dyn Fn(&Value) -> Result<Box<dyn Filter>, String> + Send + Sync>;

fn registry() -> &'static Mutex<HashMap<String, Factory>> {
    static R: OnceLock<Mutex<HashMap<String, Factory>>> = OnceLock::new();
    R.get_or_init(Default::default)
}

/// Registers `factory` under `name` (replacing an earlier one). Names of
/// built-in middlewares cannot be taken.
pub fn register(
    name: &str,
    factory: impl Fn(&Value) -> Result<Box<dyn Filter>, String> + Send + Sync + 'static,
) {
    if crate::config::middleware::TYPES.contains(&name) {
        tracing::warn!(
            name,
            "a filter cannot take the name of a built-in middleware"
        );
        return;
    }
    registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_string(), Arc::new(factory));
}

/// The factory registered under `name`.
pub fn lookup(name: &str) -> Option<Factory> {
    registry()
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(name)
        .cloned()
}
