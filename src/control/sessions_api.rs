//! The gateway's API (see `crate::gateway`): WebSocket sessions on workers,
//! reached through the hub's per-worker queues.
//!
//! - `GET /api/sessions?route=&user=&channel=&limit=&after=`: sessions
//!   sorted by id, `limit` (default 100, at most 10,000) after the id `after`.
//! - `GET /api/sessions/<id>`: one session; 404 when it is not connected.
//! - `PATCH /api/sessions/<id>`: `user`, `channels_add`, `channels_remove`,
//!   `settings` (string map), `settings_remove`.
//! - `POST /api/sessions/<id>/send`: `{"text": ...}` or `{"binary": "<base64>"}`.
//! - `POST /api/sessions/<id>/close`: `{"code": 4000, "reason": "..."}` (both optional).
//! - `POST /api/publish`: one target of `session`, `user`, `channel`,
//!   `route`, `all` and a message: `{"delivered": n, "dropped": m}` once
//!   every worker queued it.

use std::fmt::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use crossbeam_channel::{Receiver, TryRecvError};
use serde_json::{json, Map, Value};

use crate::gateway::frame;
use crate::gateway::hub::{Command, Filter, Info, Patch, Target};
use crate::gateway::session::{RouteCounters, REASONS};
use crate::shared::Live;

use super::api::{ApiState, Endpoint, Handler, Reply, Request, Response};
use super::status::escape_label;

/// Longest wait for a worker's answer.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

pub const ENDPOINTS: &[Endpoint] = &[
    Endpoint {
        method: "GET",
        path: "/api/sessions",
        handler: Handler::Async(list),
    },
    Endpoint {
        method: "GET",
        path: "/api/sessions/*",
        handler: Handler::Async(get),
    },
    Endpoint {
        method: "PATCH",
        path: "/api/sessions/*",
        handler: Handler::Async(patch),
    },
    Endpoint {
        method: "POST",
        path: "/api/sessions/*",
        handler: Handler::Async(action),
    },
    Endpoint {
        method: "POST",
        path: "/api/publish",
        handler: Handler::Async(publish),
    },
];

/// Waits for a worker's reply on the control runtime (polling: the channel
/// cannot wake this thread's runtime, and only API calls wait here).
async fn wait<T>(rx: Receiver<T>) -> Option<T> {
    let deadline = Instant::now() + REPLY_TIMEOUT;
    let mut pause = Duration::from_micros(100);
    loop {
        match rx.try_recv() {
            Ok(v) => return Some(v),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) => {}
        }
        if Instant::now() >= deadline {
            return None;
        }
        monoio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(2));
    }
}

/// Asks every worker and collects the answers that came.
async fn ask_all<T>(
    state: &ApiState,
    mk: impl Fn(crossbeam_channel::Sender<T>) -> Command,
) -> Vec<T> {
    let hub = &state.shared.gateway;
    let mut rxs = Vec::new();
    for w in 0..hub.workers() {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if hub.send(w, mk(tx)) {
            rxs.push(rx);
        }
    }
    let mut out = Vec::new();
    for rx in rxs {
        if let Some(v) = wait(rx).await {
            out.push(v);
        }
    }
    out
}

/// Asks the worker that holds session `id`.
async fn ask_one<T>(
    state: &ApiState,
    id: &str,
    mk: impl FnOnce(u64, crossbeam_channel::Sender<T>) -> Command,
) -> Option<T> {
    let (w, n) = state.shared.gateway.parse_id(id)?;
    let (tx, rx) = crossbeam_channel::bounded(1);
    if !state.shared.gateway.send(w, mk(n, tx)) {
        return None;
    }
    wait(rx).await
}

fn query(q: &str, key: &str) -> Option<String> {
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key && !v.is_empty()).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn info_json(i: &Info) -> Value {
    serde_json::to_value(i).unwrap_or(Value::Null)
}

fn not_found(id: &str) -> Response {
    Response::error(404, format!("no connected session {id:?}"))
}

fn list(state: Rc<ApiState>, req: Request) -> Reply {
    Box::pin(async move {
        let q = &req.query;
        let limit = match query(q, "limit").map(|l| l.parse::<usize>()) {
            None => DEFAULT_LIMIT,
            Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
            Some(_) => {
                return Response::error(400, format!("limit must be 1..={MAX_LIMIT}"));
            }
        };
        let after = query(q, "after");
        let filter = Filter {
            route: query(q, "route"),
            user: query(q, "user"),
            channel: query(q, "channel"),
        };
        let mut all: Vec<Info> = ask_all(&state, |tx| Command::List(filter.clone(), tx))
            .await
            .into_iter()
            .flatten()
            .collect();
        let total = all.len();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        if let Some(a) = &after {
            all.retain(|i| i.id.as_str() > a.as_str());
        }
        let more = all.len() > limit;
        all.truncate(limit);
        let next = if more {
            all.last().map(|i| i.id.clone())
        } else {
            None
        };
        Response::json(
            200,
            &json!({
                "total": total,
                "sessions": all.iter().map(info_json).collect::<Vec<_>>(),
                "next_after": next,
            }),
        )
    })
}

fn get(state: Rc<ApiState>, req: Request) -> Reply {
    Box::pin(async move {
        let id = req.tail("/api/sessions/").to_string();
        match ask_one(&state, &id, Command::Get).await.flatten() {
            Some(i) => Response::json(200, &info_json(&i)),
            None => not_found(&id),
        }
    })
}

/// The request body as a JSON object, or a 400.
fn body_object(req: &Request) -> Result<Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Response::error(400, "the body must be a JSON object")),
        Err(e) => Err(Response::error(400, format!("invalid JSON: {e}"))),
    }
}

fn strings(m: &Map<String, Value>, key: &str) -> Result<Vec<String>, Response> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(String::from)
                    .ok_or_else(|| Response::error(400, format!("{key}: expected strings")))
            })
            .collect(),
        Some(_) => Err(Response::error(
            400,
            format!("{key}: expected an array of strings"),
        )),
    }
}

fn parse_patch(m: &Map<String, Value>) -> Result<Patch, Response> {
    const FIELDS: &[&str] = &[
        "user",
        "channels_add",
        "channels_remove",
        "settings",
        "settings_remove",
    ];
    if let Some(k) = m.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(Response::error(
            400,
            format!("unknown field {k:?}; expected {}", FIELDS.join(", ")),
        ));
    }
    let user = match m.get("user") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) => Some(String::new()),
        Some(_) => {
            return Err(Response::error(
                400,
                "user: expected a string (or null to unbind)",
            ))
        }
    };
    let mut settings = std::collections::BTreeMap::new();
    match m.get("settings") {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => {
            for (k, v) in o {
                let Some(v) = v.as_str() else {
                    return Err(Response::error(
                        400,
                        format!("settings.{k}: expected a string"),
                    ));
                };
                settings.insert(k.clone(), v.to_string());
            }
        }
        Some(_) => {
            return Err(Response::error(
                400,
                "settings: expected an object of strings",
            ))
        }
    }
    Ok(Patch {
        user,
        channels_add: strings(m, "channels_add")?,
        channels_remove: strings(m, "channels_remove")?,
        settings,
        settings_remove: strings(m, "settings_remove")?,
    })
}

fn patch(state: Rc<ApiState>, req: Request) -> Reply {
    Box::pin(async move {
        let id = req.tail("/api/sessions/").to_string();
        let p = match body_object(&req).and_then(|m| parse_patch(&m)) {
            Ok(p) => p,
            Err(r) => return r,
        };
        match ask_one(&state, &id, |n, tx| Command::Patch(n, p, tx))
            .await
            .flatten()
        {
            Some(i) => Response::json(200, &info_json(&i)),
            None => not_found(&id),
        }
    })
}

/// The message of a send or publish as a whole unmasked frame.
fn message(m: &Map<String, Value>) -> Result<Bytes, Response> {
    let mut out = Vec::new();
    match (m.get("text"), m.get("binary")) {
        (Some(Value::String(t)), None) => {
            frame::write_frame(&mut out, frame::OP_TEXT, t.as_bytes())
        }
        (None, Some(Value::String(b))) => {
            let data = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .map_err(|e| Response::error(400, format!("binary: not base64 ({e})")))?;
            frame::write_frame(&mut out, frame::OP_BINARY, &data);
        }
        (Some(_), Some(_)) => return Err(Response::error(400, "give text or binary, not both")),
        (None, None) => {
            return Err(Response::error(
                400,
                "a message needs \"text\" or \"binary\"",
            ))
        }
        _ => return Err(Response::error(400, "text and binary must be strings")),
    }
    Ok(Bytes::from(out))
}

fn action(state: Rc<ApiState>, req: Request) -> Reply {
    Box::pin(async move {
        let tail = req.tail("/api/sessions/").to_string();
        let Some((id, verb)) = tail.rsplit_once('/') else {
            return Response::error(
                404,
                "use /api/sessions/<id>/send or /api/sessions/<id>/close",
            );
        };
        let m = match body_object(&req) {
            Ok(m) => m,
            // An empty body is fine for close.
            Err(_) if req.body.is_empty() && verb == "close" => Map::new(),
            Err(r) => return r,
        };
        match verb {
            "send" => {
                let f = match message(&m) {
                    Ok(f) => f,
                    Err(r) => return r,
                };
                match ask_one(&state, id, |n, tx| Command::Push(Target::Session(n), f, tx)).await {
                    Some((1, _)) => Response::json(200, &json!({"ok": true, "delivered": 1})),
                    Some((0, 1)) => {
                        Response::error(409, "session is closing or its send queue is full")
                    }
                    _ => not_found(id),
                }
            }
            "close" => {
                let code = match m.get("code") {
                    None => 1000,
                    Some(v) => match v.as_u64().and_then(|c| u16::try_from(c).ok()) {
                        Some(c) if frame::sendable_close_code(c) => c,
                        _ => {
                            return Response::error(400, "code: 1000-1003, 1007-1014 or 3000-4999")
                        }
                    },
                };
                let reason = match m.get("reason") {
                    None => String::new(),
                    Some(Value::String(s)) if s.len() <= 123 => s.clone(),
                    Some(_) => {
                        return Response::error(400, "reason: a string of at most 123 bytes")
                    }
                };
                match ask_one(&state, id, |n, tx| Command::Close(n, code, reason, tx)).await {
                    Some(true) => Response::json(200, &json!({"ok": true})),
                    _ => not_found(id),
                }
            }
            _ => Response::error(404, format!("no such action {verb:?}; use send or close")),
        }
    })
}

fn publish(state: Rc<ApiState>, req: Request) -> Reply {
    Box::pin(async move {
        let m = match body_object(&req) {
            Ok(m) => m,
            Err(r) => return r,
        };
        let mut targets = Vec::new();
        for k in ["session", "user", "channel", "route", "all"] {
            if let Some(v) = m.get(k) {
                targets.push((k, v));
            }
        }
        let [(k, v)] = targets[..] else {
            return Response::error(
                400,
                "give exactly one target: session, user, channel, route or all",
            );
        };
        let f = match message(&m) {
            Ok(f) => f,
            Err(r) => return r,
        };
        let target = match (k, v) {
            ("all", Value::Bool(true)) => Target::All,
            ("session", Value::String(id)) => {
                let Some((w, n)) = state.shared.gateway.parse_id(id) else {
                    return Response::json(200, &json!({"delivered": 0, "dropped": 0}));
                };
                let (tx, rx) = crossbeam_channel::bounded(1);
                let r = if state
                    .shared
                    .gateway
                    .send(w, Command::Push(Target::Session(n), f, tx))
                {
                    wait(rx).await.unwrap_or((0, 0))
                } else {
                    (0, 0)
                };
                return Response::json(200, &json!({"delivered": r.0, "dropped": r.1}));
            }
            ("user", Value::String(s)) => Target::User(s.clone()),
            ("channel", Value::String(s)) => Target::Channel(s.clone()),
            ("route", Value::String(s)) => Target::Route(s.clone()),
            _ => return Response::error(400, format!("{k}: expected a string (all: true)")),
        };
        let r = ask_all(&state, |tx| Command::Push(target.clone(), f.clone(), tx)).await;
        let (d, x) = r.iter().fold((0u64, 0u64), |(d, x), (a, b)| (d + a, x + b));
        Response::json(200, &json!({"delivered": d, "dropped": x}))
    })
}

/// One metric family: name, type, help, and its value from a slot's counters.
type Family = (
    &'static str,
    &'static str,
    &'static str,
    fn(&RouteCounters) -> u64,
);

/// Prometheus families of the gateway routes.
pub fn metrics(live: &Live, out: &mut String) {
    let routes: Vec<_> = live
        .routes
        .iter()
        .filter(|r| r.cfg.gateway.is_some())
        .collect();
    if routes.is_empty() {
        return;
    }
    let sum = |r: &crate::shared::LiveRoute, f: &dyn Fn(&RouteCounters) -> u64| {
        r.slots.iter().map(|s| f(&s.gateway)).sum::<u64>()
    };
    let fams: [Family; 5] = [
        (
            "ringmesh_gateway_sessions_open",
            "gauge",
            "Open WebSocket sessions.",
            |c| {
                c.opened
                    .get()
                    .saturating_sub(c.closed.iter().map(|x| x.get()).sum())
            },
        ),
        (
            "ringmesh_gateway_sessions_opened_total",
            "counter",
            "WebSocket sessions opened.",
            |c| c.opened.get(),
        ),
        (
            "ringmesh_gateway_pushed_total",
            "counter",
            "Pushed messages queued for clients.",
            |c| c.pushed.get(),
        ),
        (
            "ringmesh_gateway_push_dropped_total",
            "counter",
            "Pushed messages refused (send queue full or session closing).",
            |c| c.dropped.get(),
        ),
        (
            "ringmesh_gateway_heartbeat_timeouts_total",
            "counter",
            "Sessions closed for no client frame within heartbeat_timeout.",
            |c| c.heartbeat_timeouts.get(),
        ),
    ];
    for (name, kind, help, f) in fams {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for r in &routes {
            let _ = writeln!(
                out,
                "{name}{{route=\"{}\"}} {}",
                escape_label(&r.cfg.name),
                sum(r, &f)
            );
        }
    }
    let name = "ringmesh_gateway_sessions_closed_total";
    let _ = writeln!(
        out,
        "# HELP {name} WebSocket sessions closed, by reason.\n# TYPE {name} counter"
    );
    for r in &routes {
        for (i, reason) in REASONS.iter().enumerate() {
            let v = sum(r, &|c| c.closed.get(i).map_or(0, |x| x.get()));
            let _ = writeln!(
                out,
                "{name}{{route=\"{}\",reason=\"{reason}\"}} {v}",
                escape_label(&r.cfg.name)
            );
        }
    }
}
