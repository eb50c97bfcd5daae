//! Structure-aware config fuzzing: the input is a list of edits applied to
//! a valid config (config.example.json, or the GopherMesh fixture), so most
//! documents are nearly valid and reach deep validation (listener overlap,
//! host tables, backend names, durations, ports) instead of stopping at JSON
//! syntax. Same invariants as `config_json`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

#[path = "common_config.rs"]
mod common_config;

const BASES: [&str; 2] = [
    include_str!("../../config.example.json"),
    include_str!("../../tests/fixtures/gophermesh.json"),
];

/// Field names and values the validator knows, to build nearly valid edits.
const KEYS: &[&str] = &[
    "dashboard_host",
    "dashboard_port",
    "trusted_origins",
    "service_name",
    "internal_port",
    "routes",
    "workers",
    "listen_host",
    "backlog",
    "shutdown_grace",
    "pipe_size",
    "name",
    "protocol",
    "load_balance",
    "backends",
    "listen",
    "hosts",
    "sni",
    "proxy_protocol",
    "send_proxy",
    "timeouts",
    "cmd",
    "args",
    "internal_host",
    "internal_port",
    "connect",
    "idle",
    "header",
    "keepalive",
    "response",
    "8080",
    "8081",
    "127.0.0.1:8080",
    "0.0.0.0:8080",
    "//",
];
const STRINGS: &[&str] = &[
    "",
    " ",
    "0",
    "1",
    "65535",
    "65536",
    "-1",
    "80",
    "8080",
    "http",
    "tcp",
    "HTTP",
    "udp",
    "round_robin",
    "least_conn",
    "ip_hash",
    "random",
    "v1",
    "v2",
    "*.example.com",
    "500ms",
    "30s",
    "5m",
    "1h",
    "0s",
    "1.5s",
    "1e3s",
    "10x",
    "127.0.0.1",
    "::1",
    "0.0.0.0",
    "[::]:8080",
    "127.0.0.1:0",
    "127.0.0.1:8080",
    "example.com",
    "*.example.com",
    "*.",
    "*",
    "a..b",
    "-",
    "internal",
    "INTERNAL",
    "é",
    "\u{0}",
    "9999",
];

struct Ops<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Ops<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = self.data.get(self.pos).copied();
        self.pos += 1;
        b
    }
    fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[usize::from(self.byte().unwrap_or(0)) % xs.len()]
    }
    fn value(&mut self, depth: u8) -> Value {
        match self.byte().unwrap_or(0) % 10 {
            0 => Value::Null,
            1 => Value::Bool(self.byte().unwrap_or(0) & 1 == 1),
            2 => Value::from(
                u64::from(self.byte().unwrap_or(0)) * 257 + u64::from(self.byte().unwrap_or(0)),
            ),
            3 => Value::from(-(i64::from(self.byte().unwrap_or(0)))),
            4 => Value::from(f64::from(self.byte().unwrap_or(0)) / 7.0),
            5 | 6 => Value::from(self.pick(STRINGS)),
            7 => Value::from(u64::MAX - u64::from(self.byte().unwrap_or(0))),
            8 if depth < 3 => Value::Array(
                (0..self.byte().unwrap_or(0) % 3)
                    .map(|_| self.value(depth + 1))
                    .collect(),
            ),
            _ if depth < 3 => {
                let mut m = Map::new();
                for _ in 0..self.byte().unwrap_or(0) % 3 {
                    let k = self.pick(KEYS);
                    let v = self.value(depth + 1);
                    m.insert(k.to_string(), v);
                }
                Value::Object(m)
            }
            _ => Value::from(self.pick(STRINGS)),
        }
    }
}

/// Number of nodes (objects, arrays, scalars) in `v`.
fn size(v: &Value) -> usize {
    1 + match v {
        Value::Object(m) => m.values().map(size).sum(),
        Value::Array(a) => a.iter().map(size).sum(),
        _ => 0,
    }
}

/// The `n`-th node in pre-order.
fn nth<'a>(v: &'a mut Value, n: &mut usize) -> Option<&'a mut Value> {
    if *n == 0 {
        return Some(v);
    }
    *n -= 1;
    match v {
        Value::Object(m) => m.values_mut().find_map(|x| nth(x, n)),
        Value::Array(a) => a.iter_mut().find_map(|x| nth(x, n)),
        _ => None,
    }
}

fn edit(root: &mut Value, ops: &mut Ops<'_>) -> Option<()> {
    let total = size(root);
    let mut idx = (usize::from(ops.byte()?) << 8 | usize::from(ops.byte()?)) % total;
    let node = nth(root, &mut idx)?;
    match ops.byte()? % 6 {
        // Replace the node.
        0 | 1 => *node = ops.value(0),
        // Insert or overwrite a known key in an object.
        2 => {
            if let Value::Object(m) = node {
                let k = ops.pick(KEYS);
                let v = ops.value(0);
                m.insert(k.to_string(), v);
            }
        }
        // Remove a key or element.
        3 => match node {
            Value::Object(m) if !m.is_empty() => {
                let i = usize::from(ops.byte()?) % m.len();
                let k = m.keys().nth(i)?.clone();
                m.shift_remove(&k);
            }
            Value::Array(a) if !a.is_empty() => {
                let i = usize::from(ops.byte()?) % a.len();
                a.remove(i);
            }
            _ => {}
        },
        // Duplicate an element (same backend twice, same route twice).
        4 => match node {
            Value::Array(a) if !a.is_empty() => {
                let i = usize::from(ops.byte()?) % a.len();
                let x = a[i].clone();
                a.push(x);
            }
            Value::Object(m) if !m.is_empty() => {
                let i = usize::from(ops.byte()?) % m.len();
                let x = m.values().nth(i)?.clone();
                let k = ops.pick(KEYS);
                m.insert(k.to_string(), x);
            }
            _ => {}
        },
        // Rename a key.
        _ => {
            if let Value::Object(m) = node {
                if !m.is_empty() {
                    let i = usize::from(ops.byte()?) % m.len();
                    let k = m.keys().nth(i)?.clone();
                    let v = m.shift_remove(&k)?;
                    m.insert(ops.pick(KEYS).to_string(), v);
                }
            }
        }
    }
    Some(())
}

fuzz_target!(|data: &[u8]| {
    let Some((&base, rest)) = data.split_first() else {
        return;
    };
    let mut root: Value =
        serde_json::from_str(BASES[usize::from(base) % BASES.len()]).expect("base config is JSON");
    let mut ops = Ops { data: rest, pos: 0 };
    for _ in 0..16 {
        if edit(&mut root, &mut ops).is_none() {
            break;
        }
    }
    common_config::offline(&mut root);
    let text = if data.len().is_multiple_of(2) {
        root.to_string()
    } else {
        serde_json::to_string_pretty(&root).expect("serializes")
    };
    common_config::check(&text, Some(&root));
});
