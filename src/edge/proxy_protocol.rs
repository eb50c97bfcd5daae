//! PROXY protocol v1 and v2 (HAProxy's proxy-protocol.txt), sans-IO: the
//! header at the start of a byte slice in, addresses out; and the header
//! ringmesh writes in front of an upstream connection (`send_proxy`).
//!
//! Parsing and building are the `ppp` crate's (maintained, sans-IO, parses
//! from a borrowed slice, and builds v2 headers). What this module adds is
//! framing that makes the answer independent of how the bytes arrived: `ppp`
//! is handed a candidate only once it is complete (a v1 line up to its LF, a
//! v2 header up to its declared length), because some prefixes of a valid v1
//! line (`... 80 ` before the last port) parse as a definite error in `ppp`.
//! So for any split of a connection's first bytes across reads, [`parse`]
//! says `Incomplete` until it has enough and then the same thing as for the
//! whole input; it never looks past the header it reports.

use std::net::{IpAddr, SocketAddr};

use ppp::v2;

use crate::config::SendProxy;

/// The v2 signature: `\r\n\r\n\0\r\nQUIT\n`.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v1 header, CRLF included (the spec's 107 bytes).
pub const V1_MAX: usize = 107;
/// Longest v2 header: 16 fixed bytes plus a 16-bit length.
pub const V2_MAX: usize = 16 + u16::MAX as usize;

/// What a PROXY header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `PROXY TCP4/TCP6` (v1) or a v2 PROXY command over TCP: the client's
    /// address and the address it connected to.
    Proxied { src: SocketAddr, dst: SocketAddr },
    /// v2 LOCAL (the balancer's own health check), v1 `UNKNOWN`, or a v2
    /// family without IP addresses: the socket's own addresses stand.
    Local,
}

/// The result of looking at a connection's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A valid header of `len` bytes; the stream proper starts after it.
    Header { len: usize, source: Source },
    /// Not enough bytes yet to decide.
    Incomplete,
    /// Not a valid header; no more bytes can change that.
    Bad(Bad),
}

/// Why the first bytes are not a PROXY header (metrics label and log text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// Neither signature: the client did not send a header at all.
    Missing,
    /// A v1 line that does not parse, or has no CRLF within 107 bytes.
    V1,
    /// A v2 header with a bad version, command, family or length.
    V2,
}

impl Bad {
    pub fn as_str(self) -> &'static str {
        match self {
            Bad::Missing => "no PROXY header",
            Bad::V1 => "invalid PROXY v1 header",
            Bad::V2 => "invalid PROXY v2 header",
        }
    }
}

/// Looks for a PROXY header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    let probe = buf.len().min(V2_SIGNATURE.len());
    if buf[..probe] == V2_SIGNATURE[..probe] {
        return parse_v2(buf);
    }
    let probe = buf.len().min(6);
    if buf[..probe] == b"PROXY "[..probe] {
        return parse_v1(buf);
    }
    Parsed::Bad(Bad::Missing)
}

fn parse_v1(buf: &[u8]) -> Parsed {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(lf) = memchr::memchr(b'\n', window) else {
        return if buf.len() >= V1_MAX {
            Parsed::Bad(Bad::V1)
        } else {
            Parsed::Incomplete
        };
    };
    let line = &buf[..=lf];
    match ppp::v1::Header::try_from(line) {
        Ok(h) if h.header.len() == line.len() => {
            let source = match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => Source::Proxied {
                    src: SocketAddr::from((a.source_address, a.source_port)),
                    dst: SocketAddr::from((a.destination_address, a.destination_port)),
                },
                ppp::v1::Addresses::Tcp6(a) => Source::Proxied {
                    src: SocketAddr::from((a.source_address, a.source_port)),
                    dst: SocketAddr::from((a.destination_address, a.destination_port)),
                },
                ppp::v1::Addresses::Unknown => Source::Local,
            };
            Parsed::Header {
                len: line.len(),
                source,
            }
        }
        _ => Parsed::Bad(Bad::V1),
    }
}

fn parse_v2(buf: &[u8]) -> Parsed {
    if buf.len() < 16 {
        return Parsed::Incomplete;
    }
    let len = 16 + u16::from_be_bytes([buf[14], buf[15]]) as usize;
    if buf.len() < len {
        // The version and command are known already: fail early on junk
        // rather than wait for up to 64 KiB of it.
        if buf[12] >> 4 != 2 || buf[12] & 0x0f > 1 {
            return Parsed::Bad(Bad::V2);
        }
        return Parsed::Incomplete;
    }
    let h = match v2::Header::try_from(&buf[..len]) {
        Ok(h) if h.len() == len => h,
        _ => return Parsed::Bad(Bad::V2),
    };
    let source = match (h.command, h.protocol, h.addresses) {
        (v2::Command::Local, _, _) => Source::Local,
        // A datagram header in front of a stream makes no sense.
        (v2::Command::Proxy, v2::Protocol::Datagram, _) => return Parsed::Bad(Bad::V2),
        (v2::Command::Proxy, _, v2::Addresses::IPv4(a)) => Source::Proxied {
            src: SocketAddr::from((a.source_address, a.source_port)),
            dst: SocketAddr::from((a.destination_address, a.destination_port)),
        },
        (v2::Command::Proxy, _, v2::Addresses::IPv6(a)) => Source::Proxied {
            src: SocketAddr::from((a.source_address, a.source_port)),
            dst: SocketAddr::from((a.destination_address, a.destination_port)),
        },
        // Unspecified or unix: no IP address to take.
        (v2::Command::Proxy, _, _) => Source::Local,
    };
    Parsed::Header { len, source }
}

/// An IPv4-mapped IPv6 address as the IPv4 one (so both ends of a header
/// are of one family when a dual-stack socket reports a mapped address).
fn unmap(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

/// Appends the header for a connection from `src` to `dst` to `out`. Mixed
/// address families (which a TCP connection cannot have once mapped
/// addresses are unmapped) become v1 `UNKNOWN` / v2 `LOCAL`-less unspecified.
pub fn write(version: SendProxy, src: SocketAddr, dst: SocketAddr, out: &mut Vec<u8>) {
    let (src, dst) = (unmap(src), unmap(dst));
    match version {
        SendProxy::V1 => {
            use std::io::Write;
            let a = ppp::v1::Addresses::from((src, dst));
            let _ = write!(out, "{a}");
        }
        SendProxy::V2 => {
            let same = src.is_ipv4() == dst.is_ipv4();
            let built = if same {
                v2::Builder::with_addresses(
                    v2::Version::Two | v2::Command::Proxy,
                    v2::Protocol::Stream,
                    (src, dst),
                )
                .build()
            } else {
                v2::Builder::new(
                    v2::Version::Two | v2::Command::Proxy,
                    v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
                )
                .build()
            };
            if let Ok(b) = built {
                out.extend_from_slice(&b);
            }
        }
    }
}

/// Appends a header that says "no client" (v1 `UNKNOWN`, v2 `LOCAL`): what
/// a health check sends to a backend that expects PROXY headers.
pub fn write_local(version: SendProxy, out: &mut Vec<u8>) {
    match version {
        SendProxy::V1 => out.extend_from_slice(b"PROXY UNKNOWN\r\n"),
        SendProxy::V2 => {
            if let Ok(b) = v2::Builder::new(
                v2::Version::Two | v2::Command::Local,
                v2::AddressFamily::Unspecified | v2::Protocol::Unspecified,
            )
            .build()
            {
                out.extend_from_slice(&b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(s: &str, d: &str) -> Source {
        Source::Proxied {
            src: s.parse().unwrap(),
            dst: d.parse().unwrap(),
        }
    }

    /// Every split point gives Incomplete, then the whole answer.
    fn prefixes_agree(input: &[u8]) -> Parsed {
        let whole = parse(input);
        for cut in 0..input.len() {
            let p = parse(&input[..cut]);
            assert!(
                p == Parsed::Incomplete || p == whole,
                "prefix {cut} of {:?}: {p:?} vs {whole:?}",
                String::from_utf8_lossy(input)
            );
        }
        whole
    }

    #[test]
    fn v1_tcp4_tcp6_unknown_with_trailing_bytes() {
        let line = b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\n";
        let mut input = line.to_vec();
        input.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(
            prefixes_agree(&input),
            Parsed::Header {
                len: line.len(),
                source: addrs("192.0.2.7:56324", "198.51.100.1:443")
            }
        );
        let v6 = b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\nrest";
        assert_eq!(
            prefixes_agree(v6),
            Parsed::Header {
                len: v6.len() - 4,
                source: addrs("[2001:db8::1]:1", "[2001:db8::2]:2")
            }
        );
        assert_eq!(
            prefixes_agree(b"PROXY UNKNOWN\r\n"),
            Parsed::Header {
                len: 15,
                source: Source::Local
            }
        );
    }

    #[test]
    fn garbage_and_bad_headers() {
        assert_eq!(
            prefixes_agree(b"GET / HTTP/1.1\r\n\r\n"),
            Parsed::Bad(Bad::Missing)
        );
        assert_eq!(
            prefixes_agree(b"\x16\x03\x01\x02\x00"),
            Parsed::Bad(Bad::Missing)
        );
        assert_eq!(
            prefixes_agree(b"PROXY TCP4 1.2.3.999 1.2.3.4 1 2\r\n"),
            Parsed::Bad(Bad::V1)
        );
        assert_eq!(
            prefixes_agree(b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n"),
            Parsed::Bad(Bad::V1)
        );
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert_eq!(prefixes_agree(&long), Parsed::Bad(Bad::V1));
        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend_from_slice(&[0x31, 0x11, 0, 12]);
        assert_eq!(prefixes_agree(&v2), Parsed::Bad(Bad::V2));
        assert_eq!(parse(b""), Parsed::Incomplete);
        assert_eq!(parse(b"PRO"), Parsed::Incomplete);
    }

    #[test]
    fn written_headers_round_trip() {
        let cases = [
            ("192.0.2.7:56324", "198.51.100.1:443"),
            ("[2001:db8::1]:1", "[2001:db8::2]:65535"),
            ("[::ffff:127.0.0.7]:9", "127.0.0.1:80"),
        ];
        for (s, d) in cases {
            let (src, dst): (SocketAddr, SocketAddr) = (s.parse().unwrap(), d.parse().unwrap());
            for v in [SendProxy::V1, SendProxy::V2] {
                let mut out = Vec::new();
                write(v, src, dst, &mut out);
                let len = out.len();
                out.extend_from_slice(b"payload");
                assert_eq!(
                    prefixes_agree(&out),
                    Parsed::Header {
                        len,
                        source: Source::Proxied {
                            src: unmap(src),
                            dst: unmap(dst)
                        }
                    },
                    "{v:?} {s} {d}"
                );
            }
        }
        for v in [SendProxy::V1, SendProxy::V2] {
            let mut out = Vec::new();
            write_local(v, &mut out);
            assert!(matches!(
                parse(&out),
                Parsed::Header {
                    source: Source::Local,
                    ..
                }
            ));
        }
    }
}
