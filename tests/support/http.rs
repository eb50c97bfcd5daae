//! Blocking HTTP/1.1 test peers: a client that reads responses off a
//! keep-alive connection, and a backend that serves requests with a handler.
//! Deliberately small and strict: they frame messages by Content-Length or
//! chunked exactly as RFC 9112 says, so framing bugs in the proxy show up.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use super::{connect, Backend};

/// A parsed message head plus its body.
#[derive(Debug, Clone, Default)]
pub struct Msg {
    /// Request: method; response: version.
    pub first: String,
    /// Request: target; response: status code.
    pub second: String,
    /// Request: version; response: reason.
    pub third: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The head as received.
    pub raw_head: String,
}

impl Msg {
    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header named `name`.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn status(&self) -> u16 {
        self.second.parse().unwrap_or(0)
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    fn content_length(&self) -> Option<u64> {
        self.header("content-length")
            .and_then(|v| v.trim().parse().ok())
    }
}

/// Reads a head (up to the blank line). `None` on EOF before any byte.
pub fn read_head(r: &mut impl BufRead) -> std::io::Result<Option<Msg>> {
    let mut raw = String::new();
    let mut first_line = String::new();
    loop {
        let mut line = String::new();
        let n = r.read_line(&mut line)?;
        if n == 0 {
            if raw.is_empty() {
                return Ok(None);
            }
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("EOF inside a head: {raw:?}"),
            ));
        }
        raw.push_str(&line);
        if first_line.is_empty() {
            first_line = line.trim_end().to_string();
            continue;
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = first_line.splitn(3, ' ');
    let mut m = Msg {
        first: parts.next().unwrap_or("").to_string(),
        second: parts.next().unwrap_or("").to_string(),
        third: parts.next().unwrap_or("").to_string(),
        raw_head: raw.clone(),
        ..Msg::default()
    };
    for line in raw.lines().skip(1) {
        if let Some((n, v)) = line.split_once(':') {
            m.headers.push((n.to_string(), v.trim().to_string()));
        }
    }
    Ok(Some(m))
}

/// Reads a chunked body (pass-through checks: sizes, CRLFs, trailers).
pub fn read_chunked(r: &mut impl BufRead, out: &mut Vec<u8>) -> std::io::Result<()> {
    loop {
        let mut line = String::new();
        r.read_line(&mut line)?;
        let size = line.trim_end().split(';').next().unwrap_or("");
        let n = u64::from_str_radix(size, 16).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad chunk size {line:?}"),
            )
        })?;
        if n == 0 {
            // Trailers until the blank line.
            loop {
                let mut t = String::new();
                r.read_line(&mut t)?;
                if t == "\r\n" || t.is_empty() {
                    return Ok(());
                }
            }
        }
        let start = out.len();
        out.resize(start + n as usize, 0);
        r.read_exact(&mut out[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
        if &crlf != b"\r\n" {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "missing CRLF after chunk",
            ));
        }
    }
}

/// Reads a request (head and body). `None` when the peer closed cleanly.
pub fn read_request(r: &mut impl BufRead) -> std::io::Result<Option<Msg>> {
    let Some(mut m) = read_head(r)? else {
        return Ok(None);
    };
    if m.chunked() {
        let mut body = Vec::new();
        read_chunked(r, &mut body)?;
        m.body = body;
    } else if let Some(n) = m.content_length() {
        m.body = vec![0; n as usize];
        r.read_exact(&mut m.body)?;
    }
    Ok(Some(m))
}

/// Reads a response (head and body). `head_request`: the response to a HEAD has no body.
pub fn read_response(r: &mut impl BufRead, head_request: bool) -> std::io::Result<Msg> {
    let mut m = read_head(r)?.ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "closed before a response",
        )
    })?;
    let s = m.status();
    if head_request || (100..200).contains(&s) || s == 204 || s == 304 {
        return Ok(m);
    }
    if m.chunked() {
        let mut body = Vec::new();
        read_chunked(r, &mut body)?;
        m.body = body;
    } else if let Some(n) = m.content_length() {
        m.body = vec![0; n as usize];
        r.read_exact(&mut m.body)?;
    } else {
        r.read_to_end(&mut m.body)?;
    }
    Ok(m)
}

/// A client connection to the proxy.
pub struct Client {
    pub r: BufReader<TcpStream>,
    pub w: TcpStream,
}

impl Client {
    pub fn connect(port: u16) -> Client {
        let s = connect(port);
        Client {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
    }

    pub fn response(&mut self) -> Msg {
        read_response(&mut self.r, false).unwrap()
    }

    pub fn response_to_head(&mut self) -> Msg {
        read_response(&mut self.r, true).unwrap()
    }

    /// `GET path` with `Host: host` and extra header lines (each ending in CRLF).
    pub fn get(&mut self, path: &str, host: &str, extra: &str) -> Msg {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n").as_bytes());
        self.response()
    }

    /// True when the proxy closed the connection (EOF within `limit`).
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        self.w.set_read_timeout(Some(limit)).unwrap();
        let mut b = [0u8; 1];
        matches!(self.r.read(&mut b), Ok(0))
            || matches!(self.r.read(&mut b), Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset)
    }
}

/// One backend connection as a handler sees it.
pub struct Peer {
    pub r: BufReader<TcpStream>,
    pub w: TcpStream,
}

impl Peer {
    /// Writes a complete response with a Content-Length body.
    pub fn respond(&mut self, status: &str, headers: &str, body: &[u8]) {
        let head = format!(
            "HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\n\r\n",
            body.len()
        );
        let _ = self.w.write_all(head.as_bytes());
        let _ = self.w.write_all(body);
    }
}

/// A keep-alive HTTP/1.1 backend. Each request (head and body read; a
/// `100 Continue` sent first when asked) goes to `handler`, which writes the
/// response and returns whether to keep serving the connection.
pub fn http_backend<F>(handler: F) -> Backend
where
    F: Fn(&Msg, &mut Peer) -> bool + Send + Sync + 'static,
{
    Backend::spawn(move |c| {
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut p = Peer {
            r: BufReader::new(c.try_clone().unwrap()),
            w: c,
        };
        loop {
            let Ok(Some(mut req)) = read_head(&mut p.r) else {
                return;
            };
            if req
                .header("expect")
                .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
                && p.w.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err()
            {
                return;
            }
            if req.chunked() {
                let mut body = Vec::new();
                if read_chunked(&mut p.r, &mut body).is_err() {
                    return;
                }
                req.body = body;
            } else if let Some(n) = req.content_length() {
                req.body = vec![0; n as usize];
                if p.r.read_exact(&mut req.body).is_err() {
                    return;
                }
            }
            if !handler(&req, &mut p) {
                return;
            }
        }
    })
}
