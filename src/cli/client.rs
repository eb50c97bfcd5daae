//! A tiny blocking HTTP/1.1 client for the CLI: one request per connection
//! (the API answers with `Connection: close`), std's TcpStream, httparse for
//! the response head. No runtime: the CLI runs outside the proxy.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest response the CLI reads.
const MAX_RESPONSE: u64 = 64 << 20;

/// Where the API is and how to authenticate.
#[derive(Debug, Clone)]
pub struct Api {
    /// `host:port`
    pub addr: String,
    pub token: Option<String>,
    pub timeout: Duration,
}

/// An API response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// Why a request got no HTTP answer.
#[derive(Debug)]
pub struct Unreachable(pub String);

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Api {
    /// Sends one request and reads the whole response.
    pub fn request(&self, method: &str, path: &str, body: &[u8]) -> Result<Reply, Unreachable> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            Unreachable(format!("{what} http://{}{path}: {e}", self.addr))
        };
        let addrs: Vec<_> = self
            .addr
            .to_socket_addrs()
            .map_err(|e| fail("cannot resolve", &e))?
            .collect();
        let mut last = None;
        let mut stream = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, self.timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let mut s = match (stream, last) {
            (Some(s), _) => s,
            (None, Some(e)) => return Err(fail("cannot connect to", &e)),
            (None, None) => return Err(fail("no address for", &"empty")),
        };
        s.set_read_timeout(Some(self.timeout))
            .and_then(|()| s.set_write_timeout(Some(self.timeout)))
            .map_err(|e| fail("socket", &e))?;
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringmesh-cli/{}\r\nAccept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        req.push_str("\r\n");
        let mut out = req.into_bytes();
        out.extend_from_slice(body);
        s.write_all(&out).map_err(|e| fail("cannot send to", &e))?;
        let mut raw = Vec::new();
        (&mut s)
            .take(MAX_RESPONSE)
            .read_to_end(&mut raw)
            .map_err(|e| fail("no answer from", &e))?;
        parse(&raw).map_err(|e| fail("bad answer from", &e))
    }
}

/// Parses a complete `Connection: close` response (1xx interim heads skipped).
pub fn parse(mut raw: &[u8]) -> Result<Reply, String> {
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let n = match resp.parse(raw) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Err("truncated response head".into()),
            Err(e) => return Err(format!("malformed response: {e}")),
        };
        let status = resp.code.unwrap_or(0);
        if (100..200).contains(&status) {
            raw = &raw[n..];
            continue;
        }
        let len = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| {
                std::str::from_utf8(h.value)
                    .ok()?
                    .trim()
                    .parse::<usize>()
                    .ok()
            });
        let rest = &raw[n..];
        let body = match len {
            Some(l) if l <= rest.len() => rest[..l].to_vec(),
            Some(_) => return Err("truncated response body".into()),
            None => rest.to_vec(),
        };
        return Ok(Reply { status, body });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_interim_heads_lengths_and_truncation() {
        let r = parse(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
        let r = parse(b"HTTP/1.1 404 Not Found\r\n\r\nto eof").unwrap();
        assert_eq!((r.status, r.text().as_str()), (404, "to eof"));
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse(b"garbage\r\n\r\n").is_err());
    }
}
