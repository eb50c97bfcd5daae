//! Shared by the config targets: keep name resolution off the network, and
//! the invariants every `config::parse` result must satisfy.

use ringmesh::config::{parse, ConfigErrors, Snapshot};
use serde_json::Value;

/// Replaces every `internal_host` string that is not an IP literal by
/// `127.0.0.1`: the validator resolves host names with getaddrinfo, which a
/// fuzzer must not turn into thousands of DNS queries. Everything else in
/// the document is kept as it is.
pub fn offline(v: &mut Value) -> bool {
    let mut changed = false;
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if k == "internal_host" {
                    if let Value::String(s) = x {
                        if s.trim().parse::<std::net::IpAddr>().is_err() && !s.trim().is_empty() {
                            *s = "127.0.0.1".to_string();
                            changed = true;
                        }
                    }
                }
                changed |= offline(x);
            }
        }
        Value::Array(a) => {
            for x in a {
                changed |= offline(x);
            }
        }
        _ => {}
    }
    changed
}

/// Validates `text` (already made offline) and checks the result.
pub fn check(text: &str, root: Option<&Value>) {
    let first = parse(text);
    // Pure and deterministic.
    assert_eq!(parse(text), first, "two parses of one text differ");
    match first {
        Ok(snap) => check_snapshot(&snap),
        Err(errs) => check_errors(&errs, root),
    }
}

fn check_errors(errs: &ConfigErrors, root: Option<&Value>) {
    assert!(!errs.0.is_empty(), "Err with no error");
    for e in &errs.0 {
        assert!(!e.message.is_empty(), "error without a message: {e:?}");
        // Only a document that is not JSON, or not an object, has an error
        // without a path; everything else names where it is.
        if e.path.is_empty() {
            assert!(
                !matches!(root, Some(Value::Object(_))),
                "error without a path in an object document: {e:?}"
            );
        }
        assert!(!e.to_string().is_empty());
    }
}

fn check_snapshot(s: &Snapshot) {
    assert!(s.workers <= 1024);
    assert!(s.backlog >= 1);
    assert!(s.pipe_size >= 4096);
    assert!(!s.shutdown_grace.is_zero());
    let mut seen = vec![0usize; s.routes.len()];
    for l in &s.listeners {
        assert!(!l.routes.is_empty());
        for &i in &l.routes {
            let r = &s.routes[i];
            assert_eq!(r.listen, l.addr);
            assert_eq!(r.protocol, l.protocol);
            assert!(l.header_timeout <= r.timeouts.header);
            seen[i] += 1;
            // Every configured host routes to its own route (or to a route
            // of the same listener that was listed for it first).
            for h in &r.hosts {
                let probe = h
                    .strip_prefix("*.")
                    .map(|s| format!("x.{s}"))
                    .unwrap_or(h.clone());
                let got = l.hosts.lookup(Some(probe.as_bytes()));
                assert!(got.is_some_and(|g| l.routes.contains(&g)), "host {h} lost");
            }
            // The same for the SNI names of tcp routes; a port's routes agree
            // on proxy_protocol, and the port reads ClientHellos when one has sni.
            for n in &r.edge.sni {
                assert_eq!(r.protocol, ringmesh::config::Protocol::Tcp);
                let probe = n
                    .strip_prefix("*.")
                    .map(|s| format!("x.{s}"))
                    .unwrap_or(n.clone());
                let got = l.hosts.lookup(Some(probe.as_bytes()));
                assert!(got.is_some_and(|g| l.routes.contains(&g)), "sni {n} lost");
                assert!(l.edge.sni);
            }
            assert_eq!(l.edge.proxy_protocol, r.edge.proxy_protocol);
        }
    }
    for (i, r) in s.routes.iter().enumerate() {
        assert!(!r.backends.is_empty(), "route without backends");
        assert_ne!(r.listen.port(), 0);
        for b in &r.backends {
            assert_ne!(b.port, 0);
            assert_eq!(b.addr.port(), b.port);
        }
        assert!(seen[i] <= 1, "route on two listeners");
    }
}
