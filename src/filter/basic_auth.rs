//! `basic_auth`: HTTP Basic authentication against users of an htpasswd
//! file (read when the config is loaded or reloaded). bcrypt (`htpasswd
//! -B`) and SHA-1 (`htpasswd -s`) entries are verified with the `bcrypt`
//! and `sha1` crates; MD5 (`$apr1$`, htpasswd's default) and crypt entries
//! are refused when the config is loaded. A credential that verified once
//! is remembered by this worker (at most [`CACHE`] of them), so bcrypt's
//! cost is paid by the first request only. Missing or wrong credentials get
//! `401` with `WWW-Authenticate`.

use std::cell::RefCell;
use std::collections::HashSet;

use base64::Engine as _;
use sha1::Digest as _;

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
    hash.starts_with("$2y$")
        || hash.starts_with("$2a$")
        || hash.starts_with("$2b$")
        || hash.starts_with("{SHA}")
}

fn verify(password: &[u8], hash: &str) -> bool {
    if let Some(b64) = hash.strip_prefix("{SHA}") {
        let digest = sha1::Sha1::digest(password);
        let want = base64::engine::general_purpose::STANDARD.decode(b64.trim());
        return want.is_ok_and(|w| w.as_slice() == digest.as_slice());
    }
    bcrypt::verify(password, hash).unwrap_or(false)
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha1_and_bcrypt_entries() {
        // Made by `htpasswd -nbs bob pw2` and `htpasswd -nbB -C 5 alice secret`.
        assert!(verify(b"pw2", "{SHA}8Wyi36Noi/CMek4hVErxW9WYy3A="));
        assert!(!verify(b"pw3", "{SHA}8Wyi36Noi/CMek4hVErxW9WYy3A="));
        let h = "$2y$05$VDRNsyGCDuRpkW0emaF4eurLQeuaNtj9wDKft4hJSZkcp3rMS.oxu";
        assert!(verify(b"secret", h));
        assert!(!verify(b"Secret", h));
        assert!(!verify(b"x", "$2y$garbage"));
        assert!(!supported("$apr1$7QKV5iYZ$IEFrXOadSN/swfshF9yRu/"));
    }
}
