//! `ip_filter`: allow and deny lists of CIDRs (IPv4 and IPv6). The client
//! is the peer address, unless the peer is one of `trusted_proxies`: then
//! X-Forwarded-For is read from the right, skipping trusted proxies, and
//! the first untrusted address is the client (as nginx's `real_ip_recursive`).
//! Deny wins over allow; with an allow list, anything not in it is denied.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{Edits, Filter, Request, Verdict};

pub struct IpFilter {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    trusted: Vec<IpNet>,
}

impl IpFilter {
    pub fn new(allow: &[IpNet], deny: &[IpNet], trusted: &[IpNet]) -> IpFilter {
        IpFilter {
            allow: allow.to_vec(),
            deny: deny.to_vec(),
            trusted: trusted.to_vec(),
        }
    }

    /// The client address this filter judges.
    pub fn client(&self, req: &Request<'_>) -> IpAddr {
        let peer = canonical(req.client.ip());
        if !in_any(&self.trusted, peer) {
            return peer;
        }
        let mut client = peer;
        // The last X-Forwarded-For field holds the nearest hops at its end.
        for v in req.headers(b"x-forwarded-for").rev() {
            for hop in v.rsplit(|&b| b == b',') {
                let Some(ip) = std::str::from_utf8(hop)
                    .ok()
                    .and_then(|s| s.trim().parse::<IpAddr>().ok())
                else {
                    // Garbage: stop at the last address we could trust.
                    return client;
                };
                client = canonical(ip);
                if !in_any(&self.trusted, client) {
                    return client;
                }
            }
        }
        client
    }

    pub fn allowed(&self, ip: IpAddr) -> bool {
        if in_any(&self.deny, ip) {
            return false;
        }
        self.allow.is_empty() || in_any(&self.allow, ip)
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_any(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(&ip))
}

impl Filter for IpFilter {
    fn request_filter(&self, req: &Request<'_>, _e: &mut Edits) -> Verdict {
        if self.allowed(self.client(req)) {
            Verdict::Continue
        } else {
            Verdict::Respond(403)
        }
    }
}
