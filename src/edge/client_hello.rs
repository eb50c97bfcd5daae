//! The server name (SNI) of a TLS ClientHello, read without terminating TLS
//! (nginx `ssl_preread`, HAProxy `req.ssl_sni`); sans-IO and bounded.
//!
//! Why a small reader of our own rather than a parser crate: the part of a
//! ClientHello that passthrough needs is a walk over length-prefixed fields
//! (about a hundred lines), while the work that matters, reassembling a
//! handshake message split over several records, is left to the caller by
//! `tls-parser` (which would also pull in nom and phf, allocate every
//! extension, and fail a whole hello on one extension it does not know how
//! to decode); rustls's `Acceptor` reassembles but applies rustls's own
//! policy (it refuses hellos rustls would not negotiate, which passthrough
//! must forward untouched) and takes ownership of the bytes.
//!
//! Bounds: the ClientHello message may be at most [`MAX_HELLO`] bytes
//! (nginx's ssl_preread reads up to 16 KiB), spread over any number of
//! records within [`MAX_RAW`] bytes of input. Every length is checked
//! against the slice before it is used: the reader never looks past `buf`,
//! and the answer for a prefix of the input is either `Incomplete` or the
//! answer for the whole input (so it does not matter how the bytes arrived).

use std::borrow::Cow;

/// Largest ClientHello handshake message accepted (header included).
pub const MAX_HELLO: usize = 16 * 1024;
/// Most raw bytes (records included) looked at before giving up.
pub const MAX_RAW: usize = MAX_HELLO + 1024;
/// Longest DNS name (RFC 1035).
const MAX_NAME: usize = 253;

const RECORD_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_CLIENT_HELLO: u8 = 0x01;
const EXT_SERVER_NAME: usize = 0;

/// What the first bytes of a connection say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello<'a> {
    /// A complete ClientHello spanning the first `len` bytes of the input,
    /// with its host name if it sent one (lowercase is not enforced here).
    Done {
        len: usize,
        sni: Option<Cow<'a, str>>,
    },
    Incomplete,
    Bad(Bad),
}

/// Why the bytes are not a usable ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// Not a TLS handshake record (plain HTTP, SSH, ...).
    NotTls,
    /// A TLS record or ClientHello whose lengths do not add up.
    Malformed,
    /// The ClientHello is longer than [`MAX_HELLO`] (or [`MAX_RAW`] of records).
    TooLarge,
    /// The server_name extension holds something that is not a host name.
    BadName,
}

impl Bad {
    pub fn as_str(self) -> &'static str {
        match self {
            Bad::NotTls => "not a TLS ClientHello",
            Bad::Malformed => "malformed ClientHello",
            Bad::TooLarge => "ClientHello too large",
            Bad::BadName => "invalid server name",
        }
    }
}

/// Reads the ClientHello at the start of `buf`.
pub fn parse(buf: &[u8]) -> Hello<'_> {
    // The handshake message may be fragmented over several records: collect
    // its bytes. The common case (one record holds it all) borrows.
    let mut pos = 0usize;
    let mut msg: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    loop {
        let Some(hdr) = buf.get(pos..pos + 5) else {
            // A record header cut short: still check what we can see.
            if let Some(&t) = buf.get(pos) {
                if t != RECORD_HANDSHAKE {
                    return Hello::Bad(if pos == 0 {
                        Bad::NotTls
                    } else {
                        Bad::Malformed
                    });
                }
            }
            if let Some(&major) = buf.get(pos + 1) {
                if major != 3 {
                    return Hello::Bad(if pos == 0 {
                        Bad::NotTls
                    } else {
                        Bad::Malformed
                    });
                }
            }
            // (A caller that already holds MAX_RAW bytes and still hears
            // Incomplete has a record boundary at the limit: too large.)
            return Hello::Incomplete;
        };
        if hdr[0] != RECORD_HANDSHAKE || hdr[1] != 3 {
            return Hello::Bad(if pos == 0 {
                Bad::NotTls
            } else {
                Bad::Malformed
            });
        }
        let rlen = u16::from_be_bytes([hdr[3], hdr[4]]) as usize;
        // RFC 8446 5.1: no zero-length handshake fragments; at most 2^14.
        if rlen == 0 || rlen > 1 << 14 {
            return Hello::Bad(Bad::Malformed);
        }
        let start = pos + 5;
        let end = start + rlen;
        if end > MAX_RAW {
            return Hello::Bad(Bad::TooLarge);
        }
        // What this record holds so far (all of it when `end` is in `buf`).
        let frag = &buf[start..end.min(buf.len())];
        let have = msg.len() + frag.len();
        // The message header (type and 24-bit length) decides how much we need.
        let mut head = [0u8; 4];
        for (i, b) in msg.iter().chain(frag).take(4).enumerate() {
            head[i] = *b;
        }
        if have >= 1 && head[0] != HANDSHAKE_CLIENT_HELLO {
            return Hello::Bad(Bad::Malformed);
        }
        if have >= 4 {
            let need = 4 + (u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize);
            if need > MAX_HELLO {
                return Hello::Bad(Bad::TooLarge);
            }
            if have >= need {
                // Complete: the message ends inside this record.
                let taken = need - msg.len();
                let whole: Cow<'_, [u8]> = if msg.is_empty() {
                    Cow::Borrowed(&frag[..taken])
                } else {
                    let mut m = msg.into_owned();
                    m.extend_from_slice(&frag[..taken]);
                    Cow::Owned(m)
                };
                // A hello sharing its last record with more data would be
                // odd but legal; the record ends the bytes we vouch for.
                if end > buf.len() {
                    return Hello::Incomplete;
                }
                let name = match whole {
                    Cow::Borrowed(w) => sni(&w[4..]).map(|n| n.map(Cow::Borrowed)),
                    Cow::Owned(w) => sni(&w[4..]).map(|n| n.map(|n| Cow::Owned(n.to_string()))),
                };
                return match name {
                    Ok(sni) => Hello::Done { len: end, sni },
                    Err(b) => Hello::Bad(b),
                };
            }
        }
        if end > buf.len() {
            return Hello::Incomplete;
        }
        // The whole record is in and the message goes on in the next one.
        let mut m = msg.into_owned();
        m.extend_from_slice(frag);
        msg = Cow::Owned(m);
        pos = end;
    }
}

/// A bounds-checked cursor over a byte slice.
struct Cur<'a> {
    b: &'a [u8],
}

impl<'a> Cur<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Bad> {
        if n > self.b.len() {
            return Err(Bad::Malformed);
        }
        let (h, t) = self.b.split_at(n);
        self.b = t;
        Ok(h)
    }
    fn u8(&mut self) -> Result<usize, Bad> {
        Ok(self.take(1)?[0] as usize)
    }
    fn u16(&mut self) -> Result<usize, Bad> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]) as usize)
    }
    /// A field with a `width`-byte length prefix.
    fn vec(&mut self, width: usize) -> Result<&'a [u8], Bad> {
        let n = if width == 1 { self.u8()? } else { self.u16()? };
        self.take(n)
    }
}

/// The host_name of the server_name extension of a ClientHello body.
fn sni(body: &[u8]) -> Result<Option<&str>, Bad> {
    let mut c = Cur { b: body };
    c.take(2 + 32)?; // legacy_version, random
    if c.vec(1)?.len() > 32 {
        return Err(Bad::Malformed); // legacy_session_id
    }
    let suites = c.vec(2)?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(Bad::Malformed);
    }
    if c.vec(1)?.is_empty() {
        return Err(Bad::Malformed); // legacy_compression_methods
    }
    if c.b.is_empty() {
        return Ok(None); // no extensions at all (SSLv3-era hello)
    }
    let mut exts = Cur { b: c.vec(2)? };
    if !c.b.is_empty() {
        return Err(Bad::Malformed);
    }
    let mut found = None;
    while !exts.b.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec(2)?;
        if kind != EXT_SERVER_NAME {
            continue;
        }
        if found.is_some() {
            return Err(Bad::Malformed); // duplicate extension
        }
        let mut list = Cur { b: data };
        let mut names = Cur { b: list.vec(2)? };
        if !list.b.is_empty() {
            return Err(Bad::Malformed);
        }
        let mut host = None;
        while !names.b.is_empty() {
            let kind = names.u8()?;
            let name = names.vec(2)?;
            if kind == 0 && host.is_none() {
                host = Some(name);
            }
        }
        let Some(name) = host else {
            return Err(Bad::Malformed);
        };
        found = Some(host_name(name)?);
    }
    Ok(found)
}

/// A DNS host name as sent in SNI: letters, digits, '-', '_' and dots, no
/// empty label, at most 253 bytes (one trailing dot tolerated).
fn host_name(name: &[u8]) -> Result<&str, Bad> {
    let trimmed = name.strip_suffix(b".").unwrap_or(name);
    let ok = !trimmed.is_empty()
        && trimmed.len() <= MAX_NAME
        && trimmed.split(|&b| b == b'.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if !ok {
        return Err(Bad::BadName);
    }
    std::str::from_utf8(trimmed).map_err(|_| Bad::BadName)
}

/// Builds a minimal ClientHello record for `sni` (tests and fuzz seeds):
/// one cipher suite, the server_name extension, split into records of at
/// most `record` bytes of handshake data.
pub fn build(sni: Option<&str>, padding: usize, record: usize) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&[3, 3]);
    body.extend_from_slice(&[7u8; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // TLS_AES_128_GCM_SHA256
    body.extend_from_slice(&[1, 0]); // null compression
    let mut exts = Vec::new();
    if let Some(name) = sni {
        let n = name.as_bytes();
        let list_len = 3 + n.len();
        exts.extend_from_slice(&0u16.to_be_bytes());
        exts.extend_from_slice(&((list_len + 2) as u16).to_be_bytes());
        exts.extend_from_slice(&(list_len as u16).to_be_bytes());
        exts.push(0);
        exts.extend_from_slice(&(n.len() as u16).to_be_bytes());
        exts.extend_from_slice(n);
    }
    if padding > 0 {
        exts.extend_from_slice(&21u16.to_be_bytes()); // padding extension
        exts.extend_from_slice(&(padding as u16).to_be_bytes());
        exts.extend(std::iter::repeat_n(0, padding));
    }
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut msg = vec![HANDSHAKE_CLIENT_HELLO];
    msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    msg.extend_from_slice(&body);
    let mut out = Vec::new();
    for chunk in msg.chunks(record.max(1)) {
        out.extend_from_slice(&[RECORD_HANDSHAKE, 3, 1]);
        out.extend_from_slice(&(chunk.len() as u16).to_be_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefixes_agree(input: &[u8]) -> Hello<'_> {
        let whole = parse(input);
        for cut in 0..input.len() {
            let p = parse(&input[..cut]);
            assert!(
                p == Hello::Incomplete || p == whole,
                "prefix {cut}: {p:?} vs {whole:?}"
            );
        }
        whole
    }

    #[test]
    fn finds_sni_in_one_or_many_records() {
        for record in [16384, 100, 7, 1] {
            let mut h = build(Some("DB.example.com"), 300, record);
            let len = h.len();
            h.extend_from_slice(b"\x17\x03\x03\x00\x01x");
            match prefixes_agree(&h) {
                Hello::Done { len: l, sni } => {
                    assert_eq!(l, len);
                    assert_eq!(sni.as_deref(), Some("DB.example.com"));
                }
                other => panic!("{record}: {other:?}"),
            }
        }
        let h = build(None, 0, 16384);
        assert_eq!(
            prefixes_agree(&h),
            Hello::Done {
                len: h.len(),
                sni: None
            }
        );
    }

    #[test]
    fn refuses_what_is_not_a_client_hello() {
        assert_eq!(
            prefixes_agree(b"GET / HTTP/1.1\r\n"),
            Hello::Bad(Bad::NotTls)
        );
        assert_eq!(prefixes_agree(b"SSH-2.0-x\r\n"), Hello::Bad(Bad::NotTls));
        assert_eq!(parse(b""), Hello::Incomplete);
        // ServerHello instead of ClientHello.
        let mut h = build(Some("a.com"), 0, 16384);
        h[5] = 2;
        assert_eq!(prefixes_agree(&h), Hello::Bad(Bad::Malformed));
        // Declared longer than 16 KiB.
        let h = build(Some("a.com"), MAX_HELLO, 16384);
        assert_eq!(prefixes_agree(&h), Hello::Bad(Bad::TooLarge));
        // A name with a space.
        let h = build(Some("a b.com"), 0, 16384);
        assert_eq!(prefixes_agree(&h), Hello::Bad(Bad::BadName));
        // Zero-length record.
        assert_eq!(parse(b"\x16\x03\x01\x00\x00"), Hello::Bad(Bad::Malformed));
        // Extensions longer than the message.
        let mut h = build(Some("a.com"), 0, 16384);
        let ext_len_at = 5 + 4 + 2 + 32 + 1 + 4 + 2;
        h[ext_len_at] = 0xff;
        assert_eq!(prefixes_agree(&h), Hello::Bad(Bad::Malformed));
    }
}
