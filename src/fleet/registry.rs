//! The registry thread: this node's key `<prefix>nodes/<node-id>` under a
//! lease of [`NODE_TTL`] seconds, and the fleet as listed from etcd.
//!
//! Every [`BEAT`]: renew the lease (grant a new one when it expired or etcd
//! lost it), write the node's facts (address, version, config revision,
//! uptime, open connections), list `<prefix>nodes/`. A node that stops
//! renewing (crash, partition) leaves the list when its lease expires; one
//! that stops gracefully revokes its lease and leaves at once.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::etcd::{Etcd, EtcdError};
use super::{nap, unix_now, FleetState, NODE_TTL};
use crate::shared::Shared;

/// Time between two renewals: a third of the TTL, so two can fail.
pub const BEAT: Duration = Duration::from_secs(3);

/// This node's facts as written to its key.
pub fn node_info(state: &FleetState, shared: &Shared) -> Value {
    let s = state.status();
    let now = unix_now();
    json!({
        "node_id": state.node_id,
        "address": state.address,
        "api": state.api,
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "config_revision": s.applied_revision,
        "config_origin": s.origin,
        "config_rejected_revision": s.rejected.as_ref().map(|r| r.revision),
        "started_at": state.started_unix,
        "uptime_seconds": now.saturating_sub(state.started_unix),
        "connections_open": shared.open_connections.load(Relaxed),
        "updated_at": now,
    })
}

pub fn run(state: Arc<FleetState>, shared: Arc<Shared>) {
    let etcd = Etcd::new(&state.cfg);
    let key = format!("{}{}", state.nodes_prefix, state.node_id);
    let mut lease: Option<i64> = None;
    let mut failing = false;
    loop {
        let r = beat(&state, &shared, &etcd, &key, &mut lease);
        match &r {
            Ok(()) if failing => {
                tracing::info!(node = %state.node_id, "registered in the fleet again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!(node = %state.node_id, "fleet registration: {e}");
                failing = true;
            }
            Err(e) => tracing::debug!("fleet registration: {e}"),
        }
        state.status().registered = r.is_ok();
        if !nap(&state, BEAT) {
            break;
        }
    }
    if let Some(id) = lease {
        // Graceful stop: leave the fleet now rather than after the TTL.
        let _ = etcd.revoke(id);
    }
}

fn beat(
    state: &FleetState,
    shared: &Shared,
    etcd: &Etcd,
    key: &str,
    lease: &mut Option<i64>,
) -> Result<(), EtcdError> {
    if let Some(id) = *lease {
        match etcd.keepalive(id) {
            Ok(ttl) if ttl > 0 => {}
            Ok(_) => *lease = None, // expired while etcd was away
            Err(EtcdError::Refused(_)) => *lease = None,
            Err(e) => return Err(e),
        }
    }
    let id = match *lease {
        Some(id) => id,
        None => {
            let id = etcd.grant(NODE_TTL)?;
            *lease = Some(id);
            id
        }
    };
    let info = node_info(state, shared).to_string();
    if let Err(e) = etcd.put(key, info.as_bytes(), Some(id)) {
        if matches!(e, EtcdError::Refused(_)) {
            *lease = None;
        }
        return Err(e);
    }
    let (_, kvs) = etcd.list(&state.nodes_prefix)?;
    let nodes = kvs
        .iter()
        .filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok())
        .collect();
    let mut s = state.status();
    s.nodes = nodes;
    s.nodes_at = Some(unix_now());
    Ok(())
}
