//! `basic_auth`: HTTP Basic authentication against users of an htpasswd
//! file (read when the config is loaded or reloaded), in any format
//! Debian's `htpasswd` writes (see [`super::htpasswd`]); an entry of an
//! unknown scheme is refused when the config is loaded. A credential that verified once
//! is remembered by this worker (at most [`CACHE`] of them), so bcrypt's
//! cost is paid by the first request only. Missing or wrong credentials get
//! `401` with `WWW-Authenticate`.

use std::cell::RefCell;
use std::collections::HashSet;

use base64::Engine as _;

use super::{Edits, Filter, Request, Verdict};

/// Verified credentials remembered per worker (then the set starts afresh).
const CACHE: usize = 1024;

pub struct BasicAuth {
    /// (user, hash) as in the file.
    users: Vec<(String, String)>,
    challenge: Vec<u8>,
    verified: RefCell<HashSet<Vec<u8>>>,
}

/// Whether `hash` (an htpasswd entry's hash) is of a supported kind.
pub fn supported(hash: &str) -> bool {
    super::htpasswd::kind(hash).is_some()
}

use super::htpasswd::verify;

impl BasicAuth {
    pub fn new(users: &[(String, String)], realm: &str) -> BasicAuth {
        BasicAuth {
            users: users.to_vec(),
            challenge: format!("WWW-Authenticate: Basic realm=\"{realm}\", charset=\"UTF-8\"\r\n")
                .into_bytes(),
            verified: RefCell::new(HashSet::new()),
        }
    }

    fn check(&self, token: &[u8]) -> bool {
        if self.verified.borrow().contains(token) {
            return true;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(token) else {
            return false;
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return false;
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let ok = self
            .users
            .iter()
            .find(|(u, _)| u.as_bytes() == user)
            .is_some_and(|(_, h)| verify(password, h));
        if ok {
            let mut v = self.verified.borrow_mut();
            if v.len() >= CACHE {
                v.clear();
            }
            v.insert(token.to_vec());
        }
        ok
    }
}

impl Filter for BasicAuth {
    fn request_filter(&self, req: &Request<'_>, e: &mut Edits) -> Verdict {
        let token = req.header(b"authorization").and_then(|v| {
            let v = v.trim_ascii();
            let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ')?);
            scheme
                .eq_ignore_ascii_case(b"basic")
                .then(|| rest.trim_ascii())
        });
        if token.is_some_and(|t| self.check(t)) {
            return Verdict::Continue;
        }
        e.answer_headers.extend_from_slice(&self.challenge);
        Verdict::Respond(401)
    }
}
