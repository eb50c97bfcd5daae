//! One DNS lookup: a query encoded and an answer parsed with hickory-proto,
//! sent over a std UdpSocket with a timeout (TCP when the answer is truncated).
//!
//! Why hickory-proto and not getaddrinfo: getaddrinfo knows no SRV records,
//! hides TTLs and which server answered, and cannot be pointed at a given
//! resolver. Why not hickory-resolver: it brings a tokio runtime; the proto
//! crate is the maintained message codec alone, so a side thread with a
//! blocking socket suffices.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use crate::config::discover::{Discover, DnsType};

/// One backend found in DNS.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Target {
    pub priority: u16,
    pub addr: SocketAddr,
    /// The SRV target (or the queried name for A/AAAA).
    pub host: String,
    pub weight: u32,
}

/// The first `nameserver` of /etc/resolv.conf, port 53.
pub fn system_resolver() -> Option<SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some("nameserver"))
            .then(|| w.next()?.parse::<IpAddr>().ok())
            .flatten()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

/// Resolves a `discover` entry into its targets, sorted. No records (or
/// NXDOMAIN) is an empty set; a server failure or timeout is an error.
pub fn resolve(d: &Discover, server: SocketAddr, timeout: Duration) -> Result<Vec<Target>, String> {
    resolve_ttl(d, server, timeout).map(|(t, _)| t)
}

/// [`resolve`], and the smallest TTL (seconds) of the records the targets
/// came from (`None`: no records).
pub fn resolve_ttl(
    d: &Discover,
    server: SocketAddr,
    timeout: Duration,
) -> Result<(Vec<Target>, Option<u32>), String> {
    let deadline = Instant::now() + timeout;
    let mut ttl: Option<u32> = None;
    let mut saw = |t: u32| ttl = Some(ttl.map_or(t, |m| m.min(t)));
    let mut out = match d.rtype {
        DnsType::A | DnsType::Aaaa => {
            let rt = if d.rtype == DnsType::A {
                RecordType::A
            } else {
                RecordType::AAAA
            };
            let port = d.port.unwrap_or(0);
            addresses(&query(server, &d.dns, rt, deadline)?, rt, &mut saw)
                .into_iter()
                .map(|ip| Target {
                    priority: 0,
                    addr: SocketAddr::new(ip, port),
                    host: d.dns.clone(),
                    weight: 1,
                })
                .collect()
        }
        DnsType::Srv => {
            let m = query(server, &d.dns, RecordType::SRV, deadline)?;
            let mut out = Vec::new();
            for r in m.answers() {
                let RData::SRV(srv) = r.data() else { continue };
                saw(r.ttl());
                let target = srv.target().to_ascii();
                let host = target.trim_end_matches('.').to_string();
                if host.is_empty() {
                    continue; // "." : service explicitly not available
                }
                // Addresses from the additional section, else asked for.
                let mut ips: Vec<IpAddr> = m
                    .additionals()
                    .iter()
                    .filter(|a| a.name() == srv.target())
                    .filter_map(|a| {
                        let ip = match a.data() {
                            RData::A(x) => IpAddr::V4(x.0),
                            RData::AAAA(x) => IpAddr::V6(x.0),
                            _ => return None,
                        };
                        saw(a.ttl());
                        Some(ip)
                    })
                    .collect();
                if ips.is_empty() {
                    ips = addresses(
                        &query(server, &host, RecordType::A, deadline)?,
                        RecordType::A,
                        &mut saw,
                    );
                }
                if ips.is_empty() {
                    ips = addresses(
                        &query(server, &host, RecordType::AAAA, deadline)?,
                        RecordType::AAAA,
                        &mut saw,
                    );
                }
                for ip in ips {
                    out.push(Target {
                        priority: srv.priority(),
                        addr: SocketAddr::new(ip, d.port.unwrap_or(srv.port())),
                        host: host.clone(),
                        // RFC 2782: weight 0 means "rarely"; a share of 1 here.
                        weight: u32::from(srv.weight()).max(1),
                    });
                }
            }
            out
        }
    };
    out.sort();
    out.dedup_by(|a, b| a.addr == b.addr);
    Ok((out, ttl))
}

/// When to ask again: every `interval`, sooner when the records' TTL ends
/// first (a caching resolver would answer from its cache until then anyway,
/// and an authoritative one says the answer may change), but not more often
/// than every second for a TTL below that (TTL 0 is common for local data).
pub fn next_lookup(interval: Duration, ttl: Option<u32>) -> Duration {
    match ttl {
        Some(t) => interval.min(Duration::from_secs(u64::from(t.max(1)))),
        None => interval,
    }
}

fn addresses(m: &Message, rt: RecordType, saw: &mut impl FnMut(u32)) -> Vec<IpAddr> {
    m.answers()
        .iter()
        .filter_map(|r| {
            let ip = match (r.data(), rt) {
                (RData::A(x), RecordType::A) => IpAddr::V4(x.0),
                (RData::AAAA(x), RecordType::AAAA) => IpAddr::V6(x.0),
                _ => return None,
            };
            saw(r.ttl());
            Some(ip)
        })
        .collect()
}

/// Asks `server` one question; UDP first, TCP when the answer is truncated.
pub fn query(
    server: SocketAddr,
    name: &str,
    rt: RecordType,
    deadline: Instant,
) -> Result<Message, String> {
    let fqdn = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    let qname = Name::from_ascii(&fqdn).map_err(|e| format!("{name:?}: {e}"))?;
    let id: u16 = rand_id();
    let mut msg = Message::new();
    msg.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(qname, rt));
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    msg.set_edns(edns);
    let bytes = msg
        .to_vec()
        .map_err(|e| format!("encoding the query: {e}"))?;
    let left = |what: &str| {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("{what} {name} {rt} from {server}: timed out"))
    };
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().unwrap_or(server)
    } else {
        "[::]:0".parse().unwrap_or(server)
    };
    let sock = UdpSocket::bind(bind).map_err(|e| format!("udp socket: {e}"))?;
    sock.connect(server).map_err(|e| format!("{server}: {e}"))?;
    sock.send(&bytes)
        .map_err(|e| format!("asking {server}: {e}"))?;
    let mut buf = vec![0u8; 4096];
    let answer = loop {
        sock.set_read_timeout(Some(left("asking")?))
            .map_err(|e| e.to_string())?;
        let n = match sock.recv(&mut buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(format!(
                    "no answer from {server} for {name} {rt} (timed out)"
                ))
            }
            Err(e) => return Err(format!("asking {server} for {name} {rt}: {e}")),
        };
        match Message::from_vec(&buf[..n]) {
            Ok(m) if m.id() == id && m.message_type() == MessageType::Response => break m,
            _ => continue, // stray or malformed datagram: keep waiting
        }
    };
    let answer = if answer.truncated() {
        query_tcp(server, &bytes, id, left("asking (tcp)")?)?
    } else {
        answer
    };
    match answer.response_code() {
        ResponseCode::NoError | ResponseCode::NXDomain => Ok(answer),
        rc => Err(format!("{server} answered {rc} for {name} {rt}")),
    }
}

fn query_tcp(server: SocketAddr, q: &[u8], id: u16, timeout: Duration) -> Result<Message, String> {
    let fail = |e: std::io::Error| format!("asking {server} over tcp: {e}");
    let mut s = TcpStream::connect_timeout(&server, timeout).map_err(fail)?;
    s.set_read_timeout(Some(timeout)).map_err(fail)?;
    s.set_write_timeout(Some(timeout)).map_err(fail)?;
    let mut out = (q.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(q);
    s.write_all(&out).map_err(fail)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).map_err(fail)?;
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).map_err(fail)?;
    let m = Message::from_vec(&buf).map_err(|e| format!("bad answer from {server}: {e}"))?;
    if m.id() != id {
        return Err(format!("{server}: answer to another query"));
    }
    Ok(m)
}

/// A query id that is hard to guess (off-path spoofing): time and a counter, mixed.
fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    crate::balance::mix(t ^ N.fetch_add(1, Ordering::Relaxed).rotate_left(32)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::rdata::{A, SRV};
    use hickory_proto::rr::Record;

    /// A one-shot UDP DNS server on loopback answering with `answer(query)`.
    fn serve(answer: impl Fn(&Message) -> Message + Send + 'static) -> SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = s.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            for _ in 0..4 {
                let Ok((n, peer)) = s.recv_from(&mut buf) else {
                    return;
                };
                let q = Message::from_vec(&buf[..n]).unwrap();
                let mut a = answer(&q);
                a.set_id(q.id()).set_message_type(MessageType::Response);
                for qq in q.queries() {
                    a.add_query(qq.clone());
                }
                let _ = s.send_to(&a.to_vec().unwrap(), peer);
            }
        });
        addr
    }

    #[test]
    fn srv_with_additional_addresses_and_a_fallback() {
        let server = serve(|q| {
            let mut m = Message::new();
            let qn = q.queries()[0].name().clone();
            match q.queries()[0].query_type() {
                RecordType::SRV => {
                    let t1 = Name::from_ascii("t1.internal.").unwrap();
                    let t2 = Name::from_ascii("t2.internal.").unwrap();
                    m.add_answer(Record::from_rdata(
                        qn.clone(),
                        30,
                        RData::SRV(SRV::new(1, 10, 8080, t1.clone())),
                    ));
                    m.add_answer(Record::from_rdata(
                        qn,
                        30,
                        RData::SRV(SRV::new(2, 0, 8081, t2)),
                    ));
                    m.add_additional(Record::from_rdata(t1, 20, RData::A(A::new(127, 0, 0, 11))));
                }
                _ => {
                    m.add_answer(Record::from_rdata(qn, 7, RData::A(A::new(127, 0, 0, 12))));
                }
            }
            m
        });
        let d = Discover {
            name: "x".into(),
            dns: "_http._tcp.api.internal".into(),
            rtype: DnsType::Srv,
            port: None,
            interval: Duration::from_secs(1),
            resolver: None,
        };
        let (t, ttl) = resolve_ttl(&d, server, Duration::from_secs(5)).unwrap();
        // The smallest TTL of the records used: the fallback A record's.
        assert_eq!(ttl, Some(7));
        assert_eq!(t.len(), 2, "{t:?}");
        assert_eq!(
            (t[0].addr.to_string(), t[0].priority, t[0].weight),
            ("127.0.0.11:8080".into(), 1, 10)
        );
        assert_eq!(
            (t[1].addr.to_string(), t[1].priority, t[1].weight),
            ("127.0.0.12:8081".into(), 2, 1)
        );
        assert_eq!(t[1].host, "t2.internal");
    }

    #[test]
    fn next_lookup_honours_ttl_below_interval_with_a_1s_floor() {
        let s = Duration::from_secs;
        assert_eq!(next_lookup(s(30), None), s(30));
        assert_eq!(next_lookup(s(30), Some(300)), s(30));
        assert_eq!(next_lookup(s(30), Some(5)), s(5));
        assert_eq!(next_lookup(s(30), Some(0)), s(1));
        assert_eq!(
            next_lookup(Duration::from_millis(500), Some(0)),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn server_failure_and_silence_are_errors() {
        let server = serve(|_| {
            let mut m = Message::new();
            m.set_response_code(ResponseCode::ServFail);
            m
        });
        let d = Discover {
            name: "x".into(),
            dns: "a.internal".into(),
            rtype: DnsType::A,
            port: Some(1),
            interval: Duration::from_secs(1),
            resolver: None,
        };
        let e = resolve(&d, server, Duration::from_secs(5)).unwrap_err();
        assert!(
            e.contains("Server Failure") || e.contains("SERVFAIL") || e.contains("ServFail"),
            "{e}"
        );
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let e = resolve(&d, silent.local_addr().unwrap(), Duration::from_millis(200)).unwrap_err();
        assert!(e.contains("timed out"), "{e}");
    }
}
