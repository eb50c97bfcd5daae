//! The watcher thread: follows `<prefix>routes` and hands every new revision
//! to the control thread.
//!
//! Start: resume after the revision bootstrap saw; with none (etcd was down
//! at start), read the key first. Then one watch from `seen + 1`. etcd gone
//! (stream ends, or a quiet stream whose liveness check fails): keep the
//! routes, reconnect with backoff (250 ms doubling to 10 s), resume from the
//! last revision seen, so writes made meanwhile arrive in order. The start
//! revision compacted away: read the key again, watch from there.

use std::sync::Arc;
use std::time::Duration;

use super::etcd::{Etcd, WatchMsg};
use super::{nap, FleetState, Update};

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// A watch silent this long is checked with a read on another connection.
const QUIET: Duration = Duration::from_secs(5);

pub fn run(state: Arc<FleetState>) {
    let etcd = Etcd::new(&state.cfg);
    let mut backoff = BACKOFF_MIN;
    let mut failures = 0u32;
    // 0: read the key before watching.
    let mut seen = state.status().seen_revision;
    while !state.stopping() {
        let outcome = if seen == 0 {
            read(&state, &etcd).map(|rev| {
                seen = rev;
            })
        } else {
            follow(&state, &etcd, &mut seen, &mut backoff, &mut failures)
        };
        if let Err(e) = outcome {
            failures += 1;
            {
                let mut s = state.status();
                s.connected = false;
                s.last_error = Some(e.clone());
            }
            // The first failure in a row is news; repeats go to debug.
            if failures == 1 {
                tracing::warn!(
                    "etcd watch of {}: {e}; serving the last good routes, retrying with backoff",
                    state.routes_key
                );
            } else {
                tracing::debug!("etcd watch retry {failures}: {e}");
            }
            if !nap(&state, backoff) {
                return;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// Reads the key; sends its value when it differs from what is served.
/// Returns the store revision to watch after.
fn read(state: &FleetState, etcd: &Etcd) -> Result<i64, String> {
    let (rev, kv) = etcd.get(&state.routes_key).map_err(|e| e.to_string())?;
    let applied = state.status().applied_revision;
    if let Some(kv) = kv {
        if kv.mod_revision != applied {
            send(state, kv.mod_revision, kv.value);
        }
    }
    let mut s = state.status();
    s.seen_revision = rev;
    s.endpoint = Some(etcd.endpoint().to_string());
    Ok(rev)
}

fn send(state: &FleetState, revision: i64, value: Vec<u8>) {
    let _ = state.tx.send(Update { revision, value });
}

/// One watch connection, until it fails (`Err`) or must be re-read (`Ok`, `seen = 0`).
fn follow(
    state: &FleetState,
    etcd: &Etcd,
    seen: &mut i64,
    backoff: &mut Duration,
    failures: &mut u32,
) -> Result<(), String> {
    let mut w = etcd
        .watch(&state.routes_key, *seen + 1, QUIET)
        .map_err(|e| e.to_string())?;
    loop {
        if state.stopping() {
            return Ok(());
        }
        match w.next_msg() {
            Ok(Some(WatchMsg::Created { .. })) => {
                if *failures > 0 {
                    tracing::info!(
                        endpoint = %w.endpoint,
                        "etcd reachable again; watching {} from revision {}",
                        state.routes_key,
                        *seen + 1
                    );
                }
                *failures = 0;
                *backoff = BACKOFF_MIN;
                let mut s = state.status();
                s.connected = true;
                s.last_error = None;
                s.endpoint = Some(w.endpoint.clone());
            }
            Ok(Some(WatchMsg::Events { revision, events })) => {
                // Only the newest state matters: apply the last event.
                if let Some(ev) = events.into_iter().last() {
                    if ev.delete {
                        tracing::warn!(
                            "etcd: {} was deleted; keeping the last good routes",
                            state.routes_key
                        );
                    } else {
                        send(state, ev.kv.mod_revision, ev.kv.value);
                    }
                }
                *seen = (*seen).max(revision);
                state.status().seen_revision = *seen;
            }
            Ok(Some(WatchMsg::Compacted { compact_revision })) => {
                tracing::warn!(
                    compact_revision,
                    "etcd compacted past revision {}; re-reading {}",
                    *seen + 1,
                    state.routes_key
                );
                *seen = 0;
                return Ok(());
            }
            Ok(Some(WatchMsg::Canceled(why))) => return Err(format!("watch canceled: {why}")),
            Ok(None) => return Err("watch stream ended (etcd closed the connection)".into()),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                // Quiet: is etcd still there? (A partition shows no FIN.)
                etcd.get(&state.routes_key)
                    .map_err(|e| format!("liveness check: {e}"))?;
            }
            Err(e) => return Err(format!("watch stream: {e}")),
        }
    }
}
