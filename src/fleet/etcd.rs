//! A blocking client for etcd v3's JSON gateway (`/v3/kv/range`, `/v3/kv/txn`,
//! `/v3/watch`, `/v3/lease/*`, `/v3/auth/authenticate`).
//!
//! Why the JSON gateway and not gRPC: every etcd since 3.3 serves it on the
//! client port (3.4, Debian's, serves both `/v3/` and the older `/v3beta/`;
//! 3.5 dropped `/v3beta/`, so this speaks `/v3/`). ringmesh needs five calls
//! and one stream; a gRPC stack (tonic, prost, a tokio runtime and an HTTP/2
//! client) would add a second async runtime and dozens of crates to a proxy
//! whose data path must not see any of it. The calls run on side threads
//! with the same small blocking HTTP/1.1 client the CLI uses
//! ([`crate::cli::client`]); a watch is one long chunked response read
//! line by line. Keys and values travel as base64; int64 fields as strings.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::cli::client::{Api, Streaming};
use crate::config::source::EtcdSource;

/// Why an etcd call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtcdError {
    /// No endpoint answered (down, partitioned, refused the connection).
    Unreachable(String),
    /// etcd answered with an error (auth, bad request, ...).
    Refused(String),
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EtcdError::Unreachable(s) => write!(f, "etcd unreachable: {s}"),
            EtcdError::Refused(s) => write!(f, "etcd refused: {s}"),
        }
    }
}

impl std::error::Error for EtcdError {}

/// One key-value pair as etcd returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kv {
    pub key: String,
    pub value: Vec<u8>,
    /// The revision of the last write of this key.
    pub mod_revision: i64,
}

/// What a compare-and-swap did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cas {
    /// Written at this revision.
    Written(i64),
    /// The key's mod_revision was not the expected one: it is this now (0: absent).
    Conflict(i64),
}

/// One message of a watch stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchMsg {
    /// The watch is set up; the store is at `revision`.
    Created { revision: i64 },
    /// Changes up to `revision`.
    Events { revision: i64, events: Vec<Event> },
    /// The start revision was compacted away: re-read, then watch again.
    Compacted { compact_revision: i64 },
    /// etcd ended the watch for another reason.
    Canceled(String),
}

/// One change of a watched key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub delete: bool,
    pub kv: Kv,
}

/// A client for a list of endpoints, tried in order from the last one that answered.
/// One per thread (it keeps the endpoint and auth token in cells).
pub struct Etcd {
    endpoints: Vec<String>,
    current: Cell<usize>,
    auth: Option<(String, String)>,
    token: RefCell<Option<String>>,
    /// The TLS client config for `https://` endpoints; `Err`: its files are
    /// unusable (every call fails with that reason).
    tls: Result<Option<Arc<rustls::ClientConfig>>, String>,
    pub timeout: Duration,
}

fn b64(s: &[u8]) -> String {
    B64.encode(s)
}

/// An int64 field: etcd's gateway writes them as strings; absent means 0.
fn num(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

/// The first key after every key that starts with `prefix` (etcd's range_end).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

fn kv(v: &Value) -> Result<Kv, EtcdError> {
    let dec = |f: &str| {
        B64.decode(v[f].as_str().unwrap_or(""))
            .map_err(|e| EtcdError::Refused(format!("bad base64 in {f}: {e}")))
    };
    Ok(Kv {
        key: String::from_utf8_lossy(&dec("key")?).into_owned(),
        value: dec("value")?,
        mod_revision: num(&v["mod_revision"]),
    })
}

impl Etcd {
    pub fn new(cfg: &EtcdSource) -> Etcd {
        Etcd {
            endpoints: cfg.endpoints.clone(),
            current: Cell::new(0),
            auth: cfg.username.clone().zip(cfg.password.clone()),
            token: RefCell::new(None),
            tls: match &cfg.tls {
                None => Ok(None),
                Some(t) => super::tls::client_config(t)
                    .map(Some)
                    .map_err(|(field, e)| format!("etcd TLS {field}: {e}")),
            },
            timeout: Duration::from_secs(3),
        }
    }

    fn api(&self, i: usize, timeout: Duration) -> Result<Api, EtcdError> {
        Ok(Api {
            addr: self.endpoints[i].clone(),
            token: None,
            timeout,
            tls: self.tls.clone().map_err(EtcdError::Refused)?,
        })
    }

    /// The endpoints in the order to try them.
    fn order(&self) -> impl Iterator<Item = usize> + '_ {
        let n = self.endpoints.len();
        let start = self.current.get();
        (0..n).map(move |k| (start + k) % n)
    }

    /// Gets a token for `auth` from endpoint `i` (when auth is configured and none is held).
    fn login(&self, i: usize) -> Result<(), EtcdError> {
        let Some((user, pass)) = &self.auth else {
            return Ok(());
        };
        if self.token.borrow().is_some() {
            return Ok(());
        }
        let body = json!({"name": user, "password": pass}).to_string();
        let r = self
            .api(i, self.timeout)?
            .request("POST", "/v3/auth/authenticate", body.as_bytes())
            .map_err(|e| EtcdError::Unreachable(e.0))?;
        let v = r.json().unwrap_or(Value::Null);
        match v["token"].as_str() {
            Some(t) if r.status == 200 => {
                *self.token.borrow_mut() = Some(t.to_string());
                Ok(())
            }
            _ => Err(EtcdError::Refused(format!(
                "authenticating as {user:?}: HTTP {}: {}",
                r.status,
                error_text(&v, &r.text())
            ))),
        }
    }

    /// One JSON call, on the first endpoint that answers. An expired auth
    /// token is renewed once.
    pub fn call(&self, path: &str, body: &Value) -> Result<Value, EtcdError> {
        let text = body.to_string();
        let mut last = EtcdError::Unreachable("no endpoint".into());
        for i in self.order().collect::<Vec<_>>() {
            for attempt in 0..2 {
                if let Err(e) = self.login(i) {
                    last = e;
                    break;
                }
                let token = self.token.borrow().clone();
                let headers: Vec<(&str, &str)> = token
                    .as_deref()
                    .map(|t| vec![("Authorization", t)])
                    .unwrap_or_default();
                let r = match self.api(i, self.timeout)?.request_with(
                    "POST",
                    path,
                    &headers,
                    text.as_bytes(),
                ) {
                    Ok(r) => r,
                    Err(e) => {
                        last = EtcdError::Unreachable(e.0);
                        break;
                    }
                };
                self.current.set(i);
                let v = r.json().unwrap_or(Value::Null);
                if r.status == 200 {
                    return Ok(v);
                }
                let msg = error_text(&v, &r.text());
                if attempt == 0 && self.auth.is_some() && msg.contains("token") {
                    *self.token.borrow_mut() = None;
                    continue;
                }
                return Err(EtcdError::Refused(format!(
                    "{path}: HTTP {}: {msg}",
                    r.status
                )));
            }
        }
        Err(last)
    }

    /// The value of `key` and the store's revision.
    pub fn get(&self, key: &str) -> Result<(i64, Option<Kv>), EtcdError> {
        let v = self.call("/v3/kv/range", &json!({"key": b64(key.as_bytes())}))?;
        let kv = match v["kvs"].as_array().and_then(|a| a.first()) {
            Some(x) => Some(kv(x)?),
            None => None,
        };
        Ok((num(&v["header"]["revision"]), kv))
    }

    /// Every key under `prefix`, and the store's revision.
    pub fn list(&self, prefix: &str) -> Result<(i64, Vec<Kv>), EtcdError> {
        let v = self.call(
            "/v3/kv/range",
            &json!({"key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix.as_bytes()))}),
        )?;
        let kvs = v["kvs"]
            .as_array()
            .map(|a| a.iter().map(kv).collect::<Result<Vec<_>, _>>())
            .transpose()?
            .unwrap_or_default();
        Ok((num(&v["header"]["revision"]), kvs))
    }

    /// Writes `key` (attached to `lease` when given); returns the new revision.
    pub fn put(&self, key: &str, value: &[u8], lease: Option<i64>) -> Result<i64, EtcdError> {
        let mut body = json!({"key": b64(key.as_bytes()), "value": b64(value)});
        if let Some(l) = lease {
            body["lease"] = Value::String(l.to_string());
        }
        let v = self.call("/v3/kv/put", &body)?;
        Ok(num(&v["header"]["revision"]))
    }

    /// Writes `key` only if its mod_revision is still `expect` (0: absent).
    pub fn cas(&self, key: &str, value: &[u8], expect: i64) -> Result<Cas, EtcdError> {
        let k = b64(key.as_bytes());
        let v = self.call(
            "/v3/kv/txn",
            &json!({
                "compare": [{"key": k, "target": "MOD", "result": "EQUAL", "mod_revision": expect.to_string()}],
                "success": [{"request_put": {"key": k, "value": b64(value)}}],
                "failure": [{"request_range": {"key": k}}],
            }),
        )?;
        if v["succeeded"] == true {
            return Ok(Cas::Written(num(&v["header"]["revision"])));
        }
        let now = v["responses"][0]["response_range"]["kvs"][0]["mod_revision"].clone();
        Ok(Cas::Conflict(num(&now)))
    }

    /// A lease of `ttl` seconds; returns its id.
    pub fn grant(&self, ttl: u64) -> Result<i64, EtcdError> {
        let v = self.call("/v3/lease/grant", &json!({"TTL": ttl.to_string()}))?;
        match num(&v["ID"]) {
            0 => Err(EtcdError::Refused(format!("lease grant: {v}"))),
            id => Ok(id),
        }
    }

    /// Renews a lease; returns its remaining TTL (0: it expired).
    pub fn keepalive(&self, id: i64) -> Result<i64, EtcdError> {
        let v = self.call("/v3/lease/keepalive", &json!({"ID": id.to_string()}))?;
        // The gateway streams: one {"result": ...} line for our one request.
        Ok(num(&v["result"]["TTL"]))
    }

    /// Ends a lease now (its keys go with it).
    pub fn revoke(&self, id: i64) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", &json!({"ID": id.to_string()}))
            .map(drop)
    }

    /// Watches `key` from `start_revision`; reads block at most `quiet`
    /// before [`Watch::next_msg`] returns a timeout error (the stream stays usable).
    pub fn watch(
        &self,
        key: &str,
        start_revision: i64,
        quiet: Duration,
    ) -> Result<Watch, EtcdError> {
        let body = json!({"create_request": {
            "key": b64(key.as_bytes()),
            "start_revision": start_revision.to_string(),
        }})
        .to_string();
        let mut last = EtcdError::Unreachable("no endpoint".into());
        for i in self.order().collect::<Vec<_>>() {
            if let Err(e) = self.login(i) {
                last = e;
                continue;
            }
            let token = self.token.borrow().clone();
            let headers: Vec<(&str, &str)> = token
                .as_deref()
                .map(|t| vec![("Authorization", t)])
                .unwrap_or_default();
            let api = self.api(i, quiet)?;
            match api.open("POST", "/v3/watch", &headers, body.as_bytes()) {
                Ok(s) if s.status == 200 => {
                    self.current.set(i);
                    return Ok(Watch {
                        stream: s,
                        endpoint: api.addr,
                    });
                }
                Ok(s) => {
                    *self.token.borrow_mut() = None;
                    last = EtcdError::Refused(format!("/v3/watch: HTTP {}", s.status));
                }
                Err(e) => last = EtcdError::Unreachable(e.0),
            }
        }
        Err(last)
    }

    /// The endpoint that answered last.
    pub fn endpoint(&self) -> &str {
        &self.endpoints[self.current.get() % self.endpoints.len()]
    }
}

fn error_text(v: &Value, raw: &str) -> String {
    v["message"]
        .as_str()
        .or_else(|| v["error"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| raw.trim().chars().take(200).collect())
}

/// An open watch stream.
pub struct Watch {
    stream: Streaming,
    pub endpoint: String,
}

impl Watch {
    /// The next message. `Err` of kind `WouldBlock`/`TimedOut`: nothing for
    /// the `quiet` period (check etcd is alive, then call again); other
    /// errors and `Ok(None)` (the stream ended): reconnect.
    pub fn next_msg(&mut self) -> std::io::Result<Option<WatchMsg>> {
        loop {
            let Some(line) = self.stream.next_line()? else {
                return Ok(None);
            };
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let v: Value = serde_json::from_slice(&line).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("watch: {e}"))
            })?;
            return Ok(Some(parse_watch(&v)));
        }
    }
}

/// One line of the watch stream.
pub fn parse_watch(v: &Value) -> WatchMsg {
    if !v["error"].is_null() {
        return WatchMsg::Canceled(error_text(&v["error"], &v["error"].to_string()));
    }
    let r = &v["result"];
    let revision = num(&r["header"]["revision"]);
    let compact = num(&r["compact_revision"]);
    if compact > 0 {
        return WatchMsg::Compacted {
            compact_revision: compact,
        };
    }
    if r["canceled"] == true {
        let why = r["cancel_reason"].as_str().unwrap_or("canceled by etcd");
        return WatchMsg::Canceled(why.to_string());
    }
    if r["created"] == true {
        return WatchMsg::Created { revision };
    }
    let events = r["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| {
                    Some(Event {
                        delete: e["type"] == "DELETE",
                        kv: kv(&e["kv"]).ok()?,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    WatchMsg::Events { revision, events }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"/a/"), b"/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn parses_watch_lines_as_etcd_3_4_writes_them() {
        let created: Value =
            serde_json::from_str(r#"{"result":{"header":{"revision":"2"},"created":true}}"#)
                .unwrap();
        assert_eq!(parse_watch(&created), WatchMsg::Created { revision: 2 });
        let ev: Value = serde_json::from_str(
            r#"{"result":{"header":{"revision":"4"},"events":[
            {"kv":{"key":"L3Ivcm91dGVz","mod_revision":"3","value":"eyJiIjoyfQ=="}},
            {"type":"DELETE","kv":{"key":"L3Ivcm91dGVz","mod_revision":"4"}}]}}"#,
        )
        .unwrap();
        let WatchMsg::Events { revision, events } = parse_watch(&ev) else {
            panic!()
        };
        assert_eq!(revision, 4);
        assert_eq!(events[0].kv.key, "/r/routes");
        assert_eq!(events[0].kv.value, br#"{"b":2}"#);
        assert!(!events[0].delete && events[1].delete);
        let c: Value = serde_json::from_str(
            r#"{"result":{"header":{"revision":"9"},"canceled":true,"compact_revision":"7"}}"#,
        )
        .unwrap();
        assert_eq!(
            parse_watch(&c),
            WatchMsg::Compacted {
                compact_revision: 7
            }
        );
    }
}
