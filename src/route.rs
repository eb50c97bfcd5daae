//! Host routing for an http listener: exact names, `*.` wildcards, then the
//! port's default route. Pure: built once per snapshot, looked up per request.
//!
//! Semantics follow nginx's `server_name`: an exact name wins; otherwise the
//! longest matching wildcard suffix (`*.example.com` matches `a.example.com`
//! and `b.a.example.com`, not `example.com`); otherwise the route without
//! hosts. The lookup costs one hash probe per label of the requested name,
//! with no allocation: the name is lowercased into a stack buffer.

use std::collections::HashMap;

/// Longest host name we look up (RFC 1035: 253 characters).
const MAX_HOST: usize = 253;

/// Which route of a listener serves a Host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostTable {
    /// Lowercase host name -> route index (into `Snapshot::routes`).
    exact: HashMap<String, usize>,
    /// Lowercase suffix of a `*.suffix` pattern -> route index.
    wildcard: HashMap<String, usize>,
    /// The route without hosts, if the listener has one.
    default: Option<usize>,
}

impl HostTable {
    /// Builds the table from `(route index, host patterns)`; patterns are
    /// already validated and lowercased. A route with no patterns is the default.
    pub fn build<'a>(routes: impl IntoIterator<Item = (usize, &'a [String])>) -> HostTable {
        let mut t = HostTable::default();
        for (i, hosts) in routes {
            if hosts.is_empty() {
                t.default.get_or_insert(i);
            }
            for h in hosts {
                match h.strip_prefix("*.") {
                    Some(suffix) => t.wildcard.entry(suffix.to_string()).or_insert(i),
                    None => t.exact.entry(h.clone()).or_insert(i),
                };
            }
        }
        t
    }

    /// The route for a Host header value (or an absolute-form authority):
    /// port stripped, compared case-insensitively, trailing dot ignored.
    /// `None` (no Host, HTTP/1.0) goes to the default route.
    pub fn lookup(&self, host: Option<&[u8]>) -> Option<usize> {
        let Some(host) = host else {
            return self.default;
        };
        let mut lower = [0u8; MAX_HOST];
        let Some(name) = normalize(host, &mut lower) else {
            return self.default;
        };
        if let Some(&i) = self.exact.get(name) {
            return Some(i);
        }
        if !self.wildcard.is_empty() {
            // Suffixes after each dot, longest first: the first hit is the
            // most specific wildcard.
            let mut rest = name;
            while let Some(dot) = rest.find('.') {
                rest = &rest[dot + 1..];
                if let Some(&i) = self.wildcard.get(rest) {
                    return Some(i);
                }
            }
        }
        self.default
    }

    /// The default route (the one without hosts), if any.
    pub fn default_route(&self) -> Option<usize> {
        self.default
    }
}

/// Lowercases the name part of `host` (no port, no trailing dot) into `out`.
/// `None` for names that cannot match a configured host (too long, IP-literal,
/// non-ASCII): those go to the default route.
fn normalize<'a>(host: &[u8], out: &'a mut [u8; MAX_HOST]) -> Option<&'a str> {
    if host.first() == Some(&b'[') {
        return None;
    }
    let end = memchr::memchr(b':', host).unwrap_or(host.len());
    let mut name = host.get(..end)?;
    if let Some(stripped) = name.strip_suffix(b".") {
        name = stripped;
    }
    if name.is_empty() || name.len() > MAX_HOST {
        return None;
    }
    let dst = out.get_mut(..name.len())?;
    for (d, &s) in dst.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    std::str::from_utf8(dst).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> HostTable {
        let r0: Vec<String> = vec![];
        let r1 = vec!["api.example.com".to_string(), "*.api.example.com".into()];
        let r2 = vec!["*.example.com".to_string()];
        let r3 = vec!["www.example.com".to_string()];
        HostTable::build([
            (0, r0.as_slice()),
            (1, r1.as_slice()),
            (2, r2.as_slice()),
            (3, r3.as_slice()),
        ])
    }

    #[test]
    fn exact_wildcard_default() {
        let t = table();
        let cases: &[(&[u8], Option<usize>)] = &[
            (b"api.example.com", Some(1)),
            (b"API.Example.COM:8080", Some(1)),
            (b"api.example.com.", Some(1)),
            (b"v1.api.example.com", Some(1)),
            (b"a.b.api.example.com", Some(1)),
            (b"www.example.com", Some(3)),
            (b"WWW.example.com:80", Some(3)),
            (b"shop.example.com", Some(2)),
            (b"a.b.c.example.com", Some(2)),
            (b"example.com", Some(0)),
            (b"other.org", Some(0)),
            (b"", Some(0)),
            (b":80", Some(0)),
            (b"[::1]:80", Some(0)),
            (b"caf\xc3\xa9.example.com", Some(2)),
        ];
        for (host, want) in cases {
            assert_eq!(
                t.lookup(Some(host)),
                *want,
                "{}",
                String::from_utf8_lossy(host)
            );
        }
        assert_eq!(t.lookup(None), Some(0));
        let long = vec![b'a'; 300];
        assert_eq!(t.lookup(Some(&long)), Some(0));
    }

    #[test]
    fn no_default_means_none() {
        let r = vec!["a.com".to_string()];
        let t = HostTable::build([(4, r.as_slice())]);
        assert_eq!(t.lookup(Some(b"a.com")), Some(4));
        assert_eq!(t.lookup(Some(b"b.com")), None);
        assert_eq!(t.lookup(None), None);
        assert_eq!(t.default_route(), None);
    }
}
