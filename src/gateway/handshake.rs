//! The gateway's edits to the upgrade handshake, done on the heads the HTTP
//! proxy already rewrote (`s.out`), so the blind-tunnel path is untouched.
//!
//! - Request: any `Ringmesh-Session-Id` the client sent is removed and ours
//!   is added, so the backend learns the session's id.
//! - 101 response: `Ringmesh-Session-User`, `Ringmesh-Session-Channels`
//!   (comma-separated) and `Ringmesh-Session-Set: key=value` (repeatable)
//!   bind the session and are removed before the client sees the head;
//!   `Sec-WebSocket-Extensions` tells which RSV bits frames may carry.

use std::collections::{BTreeMap, BTreeSet};

pub const ID_HEADER: &str = "Ringmesh-Session-Id";
const USER: &str = "ringmesh-session-user";
const CHANNELS: &str = "ringmesh-session-channels";
const SET: &str = "ringmesh-session-set";

/// A gateway upgrade in progress: from the forwarded request to the session.
#[derive(Debug, Default)]
pub struct Pending {
    pub id: String,
    /// Worker-local number of the session (the id's last part).
    pub n: u64,
    pub user: String,
    pub channels: BTreeSet<String>,
    pub settings: BTreeMap<String, String>,
    /// RSV bits the negotiated extensions define (0 without extensions).
    pub rsv_allowed: u8,
    /// Backend bytes that came right behind the 101 (already frames).
    pub early: Vec<u8>,
}

/// The header lines of a head in `out[..end]`: (line start, line end incl. CRLF).
fn lines(out: &[u8]) -> Vec<(usize, usize)> {
    let end = match memchr::memmem::find(out, b"\r\n\r\n") {
        Some(i) => i + 2,
        None => return Vec::new(),
    };
    let mut v = Vec::new();
    // Skip the start line.
    let mut pos = match memchr::memmem::find(out, b"\r\n") {
        Some(i) => i + 2,
        None => return v,
    };
    while pos < end {
        let next = memchr::memmem::find(&out[pos..end], b"\r\n").map_or(end, |i| pos + i + 2);
        v.push((pos, next));
        pos = next;
    }
    v
}

fn split(line: &[u8]) -> (&[u8], &[u8]) {
    let line = line.strip_suffix(b"\r\n").unwrap_or(line);
    match memchr::memchr(b':', line) {
        Some(i) => (&line[..i], line[i + 1..].trim_ascii()),
        None => (line, b""),
    }
}

/// Removes the header lines `drop` says yes to (by lowercase name and value).
fn remove(out: &mut Vec<u8>, mut drop: impl FnMut(&str, &[u8]) -> bool) {
    let ls = lines(out);
    let mut cut: Vec<(usize, usize)> = Vec::new();
    for (a, b) in ls {
        let (name, value) = split(&out[a..b]);
        let lower = String::from_utf8_lossy(name).to_ascii_lowercase();
        if drop(&lower, value) {
            cut.push((a, b));
        }
    }
    for (a, b) in cut.into_iter().rev() {
        out.drain(a..b);
    }
}

/// Edits the rewritten upgrade request in `out` (a whole head, nothing
/// after it): drops client-sent session ids and adds `id`. Returns whether
/// the upgrade is to WebSocket (else the route tunnels it blindly).
pub fn prepare_request(out: &mut Vec<u8>, id: &str) -> bool {
    let mut websocket = false;
    let id_lower = ID_HEADER.to_ascii_lowercase();
    remove(out, |name, value| {
        if name == "upgrade" {
            websocket |= String::from_utf8_lossy(value)
                .to_ascii_lowercase()
                .contains("websocket");
        }
        name == id_lower
    });
    if websocket && out.ends_with(b"\r\n\r\n") {
        out.truncate(out.len() - 2);
        out.extend_from_slice(ID_HEADER.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(b"\r\n\r\n");
    }
    websocket
}

/// Takes the binding headers out of the 101 head in `out` into `p`.
pub fn take_binding(out: &mut Vec<u8>, p: &mut Pending) {
    remove(out, |name, value| {
        let text = String::from_utf8_lossy(value);
        match name {
            USER => {
                p.user = text.trim().to_string();
                true
            }
            CHANNELS => {
                p.channels.extend(
                    text.split(',')
                        .map(str::trim)
                        .filter(|c| !c.is_empty())
                        .map(String::from),
                );
                true
            }
            SET => {
                if let Some((k, v)) = text.split_once('=') {
                    let k = k.trim();
                    if !k.is_empty() {
                        p.settings.insert(k.to_string(), v.trim().to_string());
                    }
                }
                true
            }
            "sec-websocket-extensions" => {
                // permessage-deflate defines RSV1; an unknown extension may use any.
                let ext = text.to_ascii_lowercase();
                let known = ext
                    .split(',')
                    .all(|e| e.trim().starts_with("permessage-deflate"));
                p.rsv_allowed |= if known { 0b100 } else { 0b111 };
                false
            }
            _ => false,
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_gets_our_id_only() {
        let mut out = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nringmesh-session-id: forged\r\nConnection: upgrade\r\n\r\n".to_vec();
        assert!(prepare_request(&mut out, "abc-0-1"));
        let s = String::from_utf8(out).unwrap();
        assert!(!s.contains("forged"), "{s}");
        assert!(
            s.ends_with("Connection: upgrade\r\nRingmesh-Session-Id: abc-0-1\r\n\r\n"),
            "{s}"
        );
        let mut out = b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n".to_vec();
        assert!(!prepare_request(&mut out, "x"));
        assert_eq!(out, b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n");
    }

    #[test]
    fn binding_is_taken_and_stripped() {
        let mut out = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nRingmesh-Session-User: alice\r\nRingmesh-Session-Channels: a, b,,c\r\nRingmesh-Session-Set: lang=en\r\nRingmesh-Session-Set: x = 1=2\r\nSec-WebSocket-Extensions: permessage-deflate\r\nConnection: upgrade\r\n\r\n".to_vec();
        let mut p = Pending::default();
        take_binding(&mut out, &mut p);
        let s = String::from_utf8(out).unwrap();
        assert_eq!(s, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSec-WebSocket-Extensions: permessage-deflate\r\nConnection: upgrade\r\n\r\n");
        assert_eq!(p.user, "alice");
        assert_eq!(p.channels.iter().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(p.settings["lang"], "en");
        assert_eq!(p.settings["x"], "1=2");
        assert_eq!(p.rsv_allowed, 0b100);
    }
}
