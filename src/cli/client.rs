//! A tiny blocking HTTP/1.1 client: one request per connection (the API
//! answers with `Connection: close`), std's TcpStream, httparse for the
//! response head. No runtime: the CLI runs outside the proxy, and the etcd
//! side threads (`crate::fleet`) run beside it. [`Api::open`] streams a
//! chunked response (etcd's watch) line by line. With [`Api::tls`] the
//! connection is TLS (rustls, blocking `StreamOwned`): etcd's `https://`
//! endpoints.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
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
    /// Speak TLS with this config (the server name is `addr`'s host).
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// A plain or TLS connection.
#[derive(Debug)]
enum Conn {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.read(buf),
            Conn::Tls(s) => match s.read(buf) {
                // A peer closing after its response without close_notify:
                // the framing (Content-Length, chunked) says if anything is missing.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(0),
                r => r,
            },
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Conn::Plain(s) => s.write(buf),
            Conn::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Conn::Plain(s) => s.flush(),
            Conn::Tls(s) => s.flush(),
        }
    }
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
        self.request_with(method, path, &[], body)
    }

    /// [`Api::request`] with extra header fields.
    pub fn request_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Reply, Unreachable> {
        let mut s = self.send(method, path, headers, body)?;
        let mut raw = Vec::new();
        (&mut s)
            .take(MAX_RESPONSE)
            .read_to_end(&mut raw)
            .map_err(|e| self.fail("no answer from", path, &e))?;
        parse(&raw).map_err(|e| self.fail("bad answer from", path, &e))
    }

    /// Sends one request and returns once the response head arrived; the
    /// body is read as it comes ([`Streaming::next_line`]). Reads time out
    /// after `self.timeout` (the caller decides whether a quiet stream is dead).
    pub fn open(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Streaming, Unreachable> {
        let mut s = self.send(method, path, headers, body)?;
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        loop {
            let n = s
                .read(&mut chunk)
                .map_err(|e| self.fail("no answer from", path, &e))?;
            if n == 0 {
                return Err(self.fail("no answer from", path, &"connection closed"));
            }
            buf.extend_from_slice(&chunk[..n]);
            let mut hs = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut hs);
            match resp.parse(&buf) {
                Ok(httparse::Status::Complete(head)) => {
                    let status = resp.code.unwrap_or(0);
                    if (100..200).contains(&status) {
                        buf.drain(..head);
                        continue;
                    }
                    let chunked = resp.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("transfer-encoding")
                            && h.value.eq_ignore_ascii_case(b"chunked")
                    });
                    buf.drain(..head);
                    let mut st = Streaming {
                        status,
                        stream: s,
                        scanner: chunked.then(crate::http::chunked::ChunkedScanner::new),
                        raw: Vec::new(),
                        body: Vec::new(),
                        eof: false,
                    };
                    st.feed(&buf)
                        .map_err(|e| self.fail("bad answer from", path, &e))?;
                    return Ok(st);
                }
                Ok(httparse::Status::Partial) if buf.len() < 64 * 1024 => {}
                Ok(httparse::Status::Partial) => {
                    return Err(self.fail("bad answer from", path, &"response head too large"))
                }
                Err(e) => return Err(self.fail("bad answer from", path, &e)),
            }
        }
    }

    fn fail(&self, what: &str, path: &str, e: &dyn std::fmt::Display) -> Unreachable {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        Unreachable(format!("{what} {scheme}://{}{path}: {e}", self.addr))
    }

    /// Connects and writes the request.
    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Conn, Unreachable> {
        let addrs: Vec<_> = self
            .addr
            .to_socket_addrs()
            .map_err(|e| self.fail("cannot resolve", path, &e))?
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
            (None, Some(e)) => return Err(self.fail("cannot connect to", path, &e)),
            (None, None) => return Err(self.fail("no address for", path, &"empty")),
        };
        s.set_read_timeout(Some(self.timeout))
            .and_then(|()| s.set_write_timeout(Some(self.timeout)))
            .map_err(|e| self.fail("socket", path, &e))?;
        let mut s = match &self.tls {
            None => Conn::Plain(s),
            Some(cfg) => {
                let name = crate::fleet::tls::server_name(&self.addr)
                    .map_err(|e| self.fail("TLS to", path, &e))?;
                let mut c = rustls::ClientConnection::new(cfg.clone(), name)
                    .map_err(|e| self.fail("TLS to", path, &e))?;
                // The handshake now, so a certificate problem says so (not "cannot send").
                while c.is_handshaking() {
                    c.complete_io(&mut s)
                        .map_err(|e| self.fail("TLS handshake with", path, &e))?;
                }
                Conn::Tls(Box::new(rustls::StreamOwned::new(c, s)))
            }
        };
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: ringmesh-cli/{}\r\nAccept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.addr,
            env!("CARGO_PKG_VERSION"),
            body.len()
        );
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut out = req.into_bytes();
        out.extend_from_slice(body);
        s.write_all(&out)
            .map_err(|e| self.fail("cannot send to", path, &e))?;
        Ok(s)
    }
}

/// Largest line [`Streaming::next_line`] accepts.
const MAX_LINE: usize = 16 << 20;

/// A response whose body is read as it arrives (chunked framing removed).
#[derive(Debug)]
pub struct Streaming {
    pub status: u16,
    stream: Conn,
    /// `Some` for a chunked body.
    scanner: Option<crate::http::chunked::ChunkedScanner>,
    /// Body bytes received but not yet de-chunked (a partial framing line).
    raw: Vec<u8>,
    /// De-chunked body bytes not yet returned.
    body: Vec<u8>,
    eof: bool,
}

impl Streaming {
    /// The next newline-terminated line of the body (without the newline);
    /// `Ok(None)` at the end of the body. A read timeout comes back as an
    /// error of kind `WouldBlock` or `TimedOut`; the stream stays usable.
    pub fn next_line(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(i) = memchr::memchr(b'\n', &self.body) {
                let mut line: Vec<u8> = self.body.drain(..=i).collect();
                line.pop();
                return Ok(Some(line));
            }
            if self.eof {
                if self.body.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(std::mem::take(&mut self.body)));
            }
            if self.body.len() > MAX_LINE {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "line too long",
                ));
            }
            let mut chunk = [0u8; 16 * 1024];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                self.eof = true;
                continue;
            }
            self.feed(&chunk[..n])
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        }
    }

    /// Takes received body bytes, removing chunked framing.
    fn feed(&mut self, input: &[u8]) -> Result<(), String> {
        let Some(sc) = self.scanner.as_mut() else {
            self.body.extend_from_slice(input);
            return Ok(());
        };
        self.raw.extend_from_slice(input);
        let mut i = 0;
        while i < self.raw.len() && !sc.is_done() {
            let data = sc.data_remaining();
            if data > 0 {
                let take = (data.min((self.raw.len() - i) as u64)) as usize;
                self.body.extend_from_slice(&self.raw[i..i + take]);
                sc.consume_data(take as u64);
                i += take;
            } else {
                // Framing (sizes, CRLFs, trailers): one byte at a time, so
                // the scanner stops as soon as chunk data begins.
                sc.advance(&self.raw[i..i + 1]).map_err(|e| e.to_string())?;
                i += 1;
            }
        }
        self.raw.drain(..i);
        if sc.is_done() {
            self.eof = true;
        }
        Ok(())
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

    #[test]
    fn streams_chunked_lines_split_anywhere() {
        use std::net::TcpListener;
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).unwrap();
            let parts: [&[u8]; 5] = [
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n8\r\n{\"a\":",
                b"1}\n\r\n",
                b"3\r\n{\"b",
                b"\r\n5\r\n\":2}\n\r",
                b"\n0\r\n\r\n",
            ];
            for p in parts {
                s.write_all(p).unwrap();
                s.flush().unwrap();
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        let api = Api {
            addr,
            token: None,
            timeout: Duration::from_secs(5),
            tls: None,
        };
        let mut st = api.open("POST", "/watch", &[("X-A", "b")], b"{}").unwrap();
        assert_eq!(st.status, 200);
        assert_eq!(st.next_line().unwrap().unwrap(), b"{\"a\":1}");
        assert_eq!(st.next_line().unwrap().unwrap(), b"{\"b\":2}");
        assert_eq!(st.next_line().unwrap(), None);
        server.join().unwrap();
    }
}
