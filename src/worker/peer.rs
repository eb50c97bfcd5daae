//! A client's address in 16 bytes instead of `SocketAddr`'s 32.
//!
//! Every connection's task keeps its client's address for the access log,
//! X-Forwarded-For, PROXY headers, `ip_hash` and per-IP limits, and an idle
//! connection is little more than that task (bench/README.md, "Idle
//! memory"). IPv4, nearly every client, is kept inline (address and port);
//! an IPv6 address is boxed (its 28 bytes, scope and flow info included).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// A socket address, compact: see the module doc.
#[derive(Clone, PartialEq, Eq)]
pub enum Peer {
    V4([u8; 4], u16),
    V6(Box<SocketAddrV6>),
}

impl Peer {
    /// The full address.
    #[inline]
    pub fn get(&self) -> SocketAddr {
        match self {
            Peer::V4(ip, port) => SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(*ip), *port)),
            Peer::V6(a) => SocketAddr::V6(**a),
        }
    }

    /// The address without the port.
    #[inline]
    pub fn ip(&self) -> IpAddr {
        match self {
            Peer::V4(ip, _) => IpAddr::V4(Ipv4Addr::from(*ip)),
            Peer::V6(a) => IpAddr::V6(*a.ip()),
        }
    }
}

impl From<SocketAddr> for Peer {
    #[inline]
    fn from(a: SocketAddr) -> Peer {
        match a {
            SocketAddr::V4(a) => Peer::V4(a.ip().octets(), a.port()),
            SocketAddr::V6(a) => Peer::V6(Box::new(a)),
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.get().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::Peer;
    use std::net::SocketAddr;

    #[test]
    fn round_trips_both_families() {
        let scoped = std::net::SocketAddrV6::new("fe80::1".parse().unwrap(), 80, 7, 3);
        let mut all: Vec<SocketAddr> = ["127.0.0.1:8080", "10.1.2.3:1", "[::1]:443"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        all.push(SocketAddr::V6(scoped));
        for a in all {
            let s = a.to_string();
            let p = Peer::from(a);
            assert_eq!(p.get(), a, "{s}");
            assert_eq!(p.ip(), a.ip(), "{s}");
            assert_eq!(p.to_string(), s, "{s}");
        }
        assert_eq!(std::mem::size_of::<Peer>(), 16);
    }
}
