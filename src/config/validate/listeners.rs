//! Listening addresses: which routes share a port and how (a section of `validate.rs`).

use super::*;

impl Validator {
    pub(super) fn listeners(&mut self, routes: &[Route]) -> Vec<ListenerSpec> {
        let mut out: Vec<ListenerSpec> = Vec::new();
        let mut by_addr: HashMap<SocketAddr, usize> = HashMap::new();
        for (i, r) in routes.iter().enumerate() {
            // Same port on an overlapping address (0.0.0.0 vs 127.0.0.1) would
            // split traffic between two sockets in surprising ways: refuse it.
            if let Some(other) = routes[..i].iter().find(|o| {
                o.listen.port() == r.listen.port()
                    && o.listen.ip() != r.listen.ip()
                    && overlaps(Some(o.listen.ip()), r.listen.ip())
            }) {
                self.err(
                    route_path(&r.key),
                    format!(
                        "listen address {} overlaps {} of {}",
                        r.listen,
                        other.listen,
                        route_path(&other.key)
                    ),
                );
                continue;
            }
            match by_addr.get(&r.listen) {
                None => {
                    by_addr.insert(r.listen, out.len());
                    out.push(ListenerSpec {
                        addr: r.listen,
                        protocol: r.protocol,
                        routes: vec![i],
                        hosts: HostTable::default(),
                        header_timeout: r.timeouts.header,
                        tls: r.tls.clone(),
                        edge: crate::config::edge::ListenerEdge::of(r),
                        http2: r.http2,
                    });
                }
                Some(&li) => {
                    let first = &routes[out[li].routes[0]];
                    let others: Vec<&Route> = out[li].routes.iter().map(|&o| &routes[o]).collect();
                    let mut clash = crate::config::edge::share(r, &others);
                    let by_host = clash.is_none() && r.protocol == Protocol::Http;
                    for o in others.iter().filter(|_| by_host) {
                        if r.hosts.is_empty() && o.hosts.is_empty() {
                            clash = Some(format!(
                                "duplicate listen address {}: {} is already the default route there; give one of them \"hosts\"",
                                r.listen,
                                route_path(&o.key)
                            ));
                        } else if let Some(h) = r.hosts.iter().find(|h| o.hosts.contains(h)) {
                            clash = Some(format!(
                                "host \"{h}\" on {} is already served by {}",
                                r.listen,
                                route_path(&o.key)
                            ));
                        }
                        if clash.is_some() {
                            break;
                        }
                    }
                    if let Some((p, msg)) =
                        crate::config::tls::check_shared(first, r, &route_path(&r.key))
                    {
                        clash = clash.or(Some(String::new()));
                        self.err(p, msg);
                    }
                    match clash {
                        Some(msg) if msg.is_empty() => {}
                        Some(msg) => self.err(route_path(&r.key), msg),
                        None => {
                            let l = &mut out[li];
                            l.edge.sni |= crate::config::edge::ListenerEdge::of(r).sni;
                            l.routes.push(i);
                            l.header_timeout = l.header_timeout.min(r.timeouts.header);
                            l.http2 = match (l.http2, r.http2) {
                                (Some(a), Some(b)) => Some(a.strictest(b)),
                                (a, b) => a.or(b),
                            };
                        }
                    }
                }
            }
        }
        for l in &mut out {
            l.hosts = HostTable::build(
                l.routes
                    .iter()
                    .map(|&i| (i, crate::config::edge::names(&routes[i]))),
            );
        }
        out
    }
}
