//! A raw HTTP/2 client for tests: writes frames byte by byte (HPACK literal
//! fields without Huffman), reads frames back without decoding headers.
//! Enough to send floods and watch streams end, with nothing hidden by a library.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const PRIORITY: u8 = 2;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const WINDOW_UPDATE: u8 = 8;
pub const CONTINUATION: u8 = 9;
pub const END_STREAM: u8 = 1;
pub const END_HEADERS: u8 = 4;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// GOAWAY's (last stream id, error code).
    pub fn goaway(&self) -> (u32, u32) {
        let p = &self.payload;
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        (be(&p[0..4]) & 0x7fff_ffff, be(&p[4..8]))
    }
}

pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut f = vec![(n >> 16) as u8, (n >> 8) as u8, n as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An HPACK header block of literal fields (never indexed, no Huffman).
pub fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    let int = |b: &mut Vec<u8>, n: usize| {
        // 7-bit prefix integer (H bit 0).
        if n < 127 {
            b.push(n as u8);
        } else {
            b.push(127);
            let mut rest = n - 127;
            while rest >= 128 {
                b.push((rest % 128 + 128) as u8);
                rest /= 128;
            }
            b.push(rest as u8);
        }
    };
    for (k, v) in fields {
        b.push(0x10);
        int(&mut b, k.len());
        b.extend_from_slice(k.as_bytes());
        int(&mut b, v.len());
        b.extend_from_slice(v.as_bytes());
    }
    b
}

/// The request fields for `method path` on `authority`.
pub fn request_block(method: &str, path: &str, authority: &str) -> Vec<u8> {
    block(&[
        (":method", method),
        (":scheme", "http"),
        (":path", path),
        (":authority", authority),
    ])
}

pub struct Conn {
    pub s: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    /// Connects, sends the preface and `settings` (id, value pairs).
    pub fn open(port: u16, settings: &[(u16, u32)]) -> Conn {
        let s = super::connect(port);
        s.set_nodelay(true).unwrap();
        let mut c = Conn { s, buf: Vec::new() };
        let mut p = Vec::new();
        for (id, v) in settings {
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&v.to_be_bytes());
        }
        let mut out = PREFACE.to_vec();
        out.extend(frame(SETTINGS, 0, 0, &p));
        c.send(&out);
        c
    }

    /// Writes bytes; false when the proxy already closed.
    pub fn send(&mut self, b: &[u8]) -> bool {
        self.s.write_all(b).is_ok()
    }

    pub fn get(&mut self, stream: u32, path: &str, authority: &str) -> bool {
        let b = request_block("GET", path, authority);
        self.send(&frame(HEADERS, END_HEADERS | END_STREAM, stream, &b))
    }

    /// The next frame, `None` on EOF, error or `limit` without one.
    pub fn next(&mut self, limit: Duration) -> Option<Frame> {
        let deadline = Instant::now() + limit;
        loop {
            if self.buf.len() >= 9 {
                let n = (usize::from(self.buf[0]) << 16)
                    | (usize::from(self.buf[1]) << 8)
                    | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + n {
                    let f = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes([
                            self.buf[5],
                            self.buf[6],
                            self.buf[7],
                            self.buf[8],
                        ]) & 0x7fff_ffff,
                        payload: self.buf[9..9 + n].to_vec(),
                    };
                    self.buf.drain(..9 + n);
                    // Its SETTINGS need an ACK; PINGs are answered.
                    if f.kind == SETTINGS && f.flags & 1 == 0 {
                        self.send(&frame(SETTINGS, 1, 0, &[]));
                    }
                    if f.kind == PING && f.flags & 1 == 0 {
                        self.send(&frame(PING, 1, 0, &f.payload));
                    }
                    return Some(f);
                }
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.s
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut b = [0u8; 16384];
            match self.s.read(&mut b) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&b[..n]),
            }
        }
    }

    /// Reads frames until a GOAWAY (returned) or EOF/`limit` (None).
    pub fn until_goaway(&mut self, limit: Duration) -> Option<Frame> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let f = self.next(left)?;
            if f.kind == GOAWAY {
                return Some(f);
            }
        }
    }

    /// True when the proxy closed the connection within `limit`.
    pub fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        self.buf.clear();
        loop {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return false;
            };
            self.s
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut b = [0u8; 16384];
            match self.s.read(&mut b) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
                Err(_) => return false,
            }
        }
    }
}
