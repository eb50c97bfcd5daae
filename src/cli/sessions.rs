//! `ringmesh sessions`, `ringmesh publish`, `ringmesh session close`: the
//! gateway's API (`/api/sessions`, `/api/publish`) from a shell.

use serde_json::{json, Value};

use super::{refused, table, Api, UNREACHABLE};

/// Percent-encodes a query value.
fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Which sessions a listing shows.
#[derive(Debug, Default, Clone)]
pub struct ListFilter {
    pub route: Option<String>,
    pub user: Option<String>,
    pub channel: Option<String>,
}

/// `ringmesh sessions`: one line per connected session (all pages).
pub fn sessions(api: &Api, f: &ListFilter, as_json: bool) -> u8 {
    let mut q = String::from("limit=10000");
    for (k, v) in [
        ("route", &f.route),
        ("user", &f.user),
        ("channel", &f.channel),
    ] {
        if let Some(v) = v {
            q.push_str(&format!("&{k}={}", enc(v)));
        }
    }
    let mut all: Vec<Value> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/api/sessions?{q}&after={}", enc(a)),
            None => format!("/api/sessions?{q}"),
        };
        let r = match api.request("GET", &path, b"") {
            Ok(r) => r,
            Err(e) => {
                eprintln!("sessions: {e}");
                return UNREACHABLE;
            }
        };
        if r.status != 200 {
            return refused("sessions", &r);
        }
        let v = r.json().unwrap_or(Value::Null);
        all.extend(v["sessions"].as_array().cloned().unwrap_or_default());
        match v["next_after"].as_str() {
            Some(a) => after = Some(a.to_string()),
            None => break,
        }
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
        return 0;
    }
    let mut rows =
        vec![["ID", "ROUTE", "CLIENT", "USER", "CHANNELS", "IN", "OUT"].map(String::from)];
    for s in &all {
        let chans: Vec<&str> = s["channels"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        rows.push([
            s["id"].as_str().unwrap_or("").to_string(),
            s["route"].as_str().unwrap_or("").to_string(),
            s["client"].as_str().unwrap_or("").to_string(),
            s["user"]
                .as_str()
                .filter(|u| !u.is_empty())
                .unwrap_or("-")
                .to_string(),
            if chans.is_empty() {
                "-".into()
            } else {
                chans.join(",")
            },
            s["messages_in"].as_u64().unwrap_or(0).to_string(),
            s["messages_out"].as_u64().unwrap_or(0).to_string(),
        ]);
    }
    print!("{}", table(&rows));
    println!("{} session(s)", all.len());
    0
}

/// `ringmesh publish`: `target` is (kind, value) with kind one of session,
/// user, channel, route (value ignored for all).
pub fn publish(api: &Api, kind: &str, value: &str, text: &str) -> u8 {
    let body = if kind == "all" {
        json!({"all": true, "text": text})
    } else {
        json!({kind: value, "text": text})
    };
    let r = match api.request("POST", "/api/publish", body.to_string().as_bytes()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("publish: {e}");
            return UNREACHABLE;
        }
    };
    if r.status != 200 {
        return refused("publish", &r);
    }
    let v = r.json().unwrap_or(Value::Null);
    println!("delivered {} dropped {}", v["delivered"], v["dropped"]);
    0
}

/// `ringmesh session close ID`.
pub fn close(api: &Api, id: &str, code: u16, reason: &str) -> u8 {
    let body = json!({"code": code, "reason": reason}).to_string();
    let path = format!("/api/sessions/{}/close", enc(id));
    let r = match api.request("POST", &path, body.as_bytes()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("session close: {e}");
            return UNREACHABLE;
        }
    };
    if r.status != 200 {
        return refused("session close", &r);
    }
    println!("closing {id}");
    0
}
