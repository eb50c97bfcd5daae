//! The registry thread: this node's key `<prefix>nodes/<node-id>` under a
//! lease of [`NODE_TTL`] seconds, and the fleet as listed from etcd.
//!
//! Every [`BEAT`]: renew the lease (grant a new one when it expired or etcd
//! lost it). The node's facts (address, version, config revision, uptime,
//! open connections) are written when the config facts change, else every
//! [`REFRESH`]: a lease renewal creates no revision, a put does, and a fleet
//! of N nodes should not cost etcd N/3 writes a second. The list of
//! `<prefix>nodes/` is read only while someone looks (`GET /api/fleet` in
//! the last [`LIST_FOR`]): N nodes listing N entries every beat is O(N²).
//! A node that stops renewing (crash, partition) leaves the list when its
//! lease expires; one that stops gracefully revokes its lease and leaves at once.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::etcd::{Etcd, EtcdError};
use super::{nap, unix_now, FleetState, NODE_TTL};
use crate::shared::Shared;

/// Time between two renewals: a third of the TTL, so two can fail.
pub const BEAT: Duration = Duration::from_secs(3);
/// Longest time between two writes of unchanged config facts.
pub const REFRESH: Duration = Duration::from_secs(15);
/// How long after a `GET /api/fleet` the registry keeps listing the fleet.
pub const LIST_FOR: Duration = Duration::from_secs(60);

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
    let mut written: Option<(Value, std::time::Instant)> = None;
    loop {
        let r = beat(&state, &shared, &etcd, &key, &mut lease, &mut written);
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
    written: &mut Option<(Value, std::time::Instant)>,
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
            *written = None; // the key went with the old lease
            id
        }
    };
    let info = node_info(state, shared);
    // The facts that must show at once: which config the node serves.
    let facts = |v: &Value| {
        [
            "config_revision",
            "config_origin",
            "config_rejected_revision",
        ]
        .map(|k| v[k].clone())
    };
    let due = match written {
        None => true,
        Some((old, at)) => facts(old) != facts(&info) || at.elapsed() >= REFRESH,
    };
    if due {
        if let Err(e) = etcd.put(key, info.to_string().as_bytes(), Some(id)) {
            if matches!(e, EtcdError::Refused(_)) {
                *lease = None;
            }
            return Err(e);
        }
        *written = Some((info, std::time::Instant::now()));
    }
    if !state.fleet_wanted(LIST_FOR) {
        return Ok(());
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
