//! Certificate choice by SNI: exact name first, then a wildcard one label up,
//! else the default (the first certificate), also for clients without SNI.
//!
//! rustls's own `ResolvesServerCertUsingSni` matches exact names only and
//! refuses clients without SNI, hence this one.
//!
//! Which certificate a connection got is needed after the handshake (421 for
//! a Host it does not cover), and rustls's unbuffered server connection does
//! not expose the SNI name. `resolve` runs synchronously inside
//! `process_tls_records` on the worker's own thread, so it leaves its choice
//! in a thread-local that the record layer reads right after that call.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

thread_local! {
    /// The last choice on this thread: (certificate index, SNI name).
    static CHOSEN: RefCell<Option<(usize, Option<Box<str>>)>> = const { RefCell::new(None) };
}

/// Takes (and clears) the choice the resolver made on this thread: the
/// certificate index and the SNI name the client sent (for the access log).
pub fn take_chosen() -> Option<(usize, Option<Box<str>>)> {
    CHOSEN.with(|c| c.borrow_mut().take())
}

#[derive(Debug)]
pub struct SniResolver {
    keys: Vec<Arc<CertifiedKey>>,
    exact: HashMap<String, usize>,
    /// `*.example.com` is stored as `example.com`.
    wildcard: HashMap<String, usize>,
}

impl SniResolver {
    /// `certs[i]` with its names (lowercase, `*.` for wildcards). An earlier
    /// certificate wins a name listed twice.
    pub fn new(certs: Vec<(Arc<CertifiedKey>, Vec<String>)>) -> SniResolver {
        let mut r = SniResolver {
            keys: Vec::with_capacity(certs.len()),
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        };
        for (i, (key, names)) in certs.into_iter().enumerate() {
            r.keys.push(key);
            for n in names {
                match n.strip_prefix("*.") {
                    Some(suffix) => r.wildcard.entry(suffix.to_string()).or_insert(i),
                    None => r.exact.entry(n).or_insert(i),
                };
            }
        }
        r
    }

    /// The certificate index for an SNI name (None: no SNI).
    pub fn pick(&self, sni: Option<&str>) -> usize {
        let Some(name) = sni else { return 0 };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(&i) = self.exact.get(&name) {
            return i;
        }
        if let Some((_, parent)) = name.split_once('.') {
            if let Some(&i) = self.wildcard.get(parent) {
                return i;
            }
        }
        0
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let sni = hello.server_name();
        let i = self.pick(sni);
        CHOSEN.with(|c| *c.borrow_mut() = Some((i, sni.map(Box::from))));
        self.keys.get(i).cloned()
    }
}
