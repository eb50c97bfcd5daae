//! `cors`: answers preflights itself and adds the CORS response headers
//! for allowed origins (the Fetch standard's CORS protocol).
//!
//! An origin is allowed when it equals an entry of `origins`, matches a
//! wildcard entry (`https://*.example.com`: one `*`, matched as prefix and
//! suffix), or `origins` holds `"*"`. A preflight (`OPTIONS` with
//! `Access-Control-Request-Method`) from an allowed origin gets `204` with
//! the allowed methods and headers; from another origin, `403`. Other
//! requests go upstream; an allowed origin's response gets
//! `Access-Control-Allow-Origin` (the backend's own CORS headers are
//! replaced) and `Vary: Origin`.

use std::io::Write as _;

use super::{Edits, Filter, Request, Verdict};

pub struct Cors {
    /// (prefix, suffix, is_wildcard)
    origins: Vec<(Vec<u8>, Vec<u8>, bool)>,
    any: bool,
    methods: Vec<u8>,
    headers: Vec<u8>,
    expose: Vec<u8>,
    credentials: bool,
    max_age: u64,
}

impl Cors {
    pub fn new(
        origins: &[String],
        methods: &[String],
        headers: &[String],
        expose: &[String],
        credentials: bool,
        max_age: u64,
    ) -> Cors {
        let any = origins.iter().any(|o| o == "*");
        let origins = origins
            .iter()
            .filter(|o| *o != "*")
            .map(|o| match o.split_once('*') {
                Some((p, s)) => (p.as_bytes().to_vec(), s.as_bytes().to_vec(), true),
                None => (o.as_bytes().to_vec(), Vec::new(), false),
            })
            .collect();
        Cors {
            origins,
            any,
            methods: methods.join(", ").into_bytes(),
            headers: headers.join(", ").into_bytes(),
            expose: expose.join(", ").into_bytes(),
            credentials,
            max_age,
        }
    }

    fn allowed(&self, origin: &[u8]) -> bool {
        self.any
            || self.origins.iter().any(|(p, s, wild)| {
                if *wild {
                    origin.len() > p.len() + s.len() && origin.starts_with(p) && origin.ends_with(s)
                } else {
                    origin.eq_ignore_ascii_case(p)
                }
            })
    }

    /// `Access-Control-Allow-Origin` (and credentials) lines for `origin`.
    fn allow_lines(&self, out: &mut Vec<u8>, origin: &[u8]) {
        out.extend_from_slice(b"Access-Control-Allow-Origin: ");
        if self.any && !self.credentials {
            out.push(b'*');
        } else {
            out.extend_from_slice(origin);
        }
        out.extend_from_slice(b"\r\nVary: Origin\r\n");
        if self.credentials {
            out.extend_from_slice(b"Access-Control-Allow-Credentials: true\r\n");
        }
    }
}

impl Filter for Cors {
    fn request_filter(&self, req: &Request<'_>, e: &mut Edits) -> Verdict {
        let Some(origin) = req.header(b"origin") else {
            return Verdict::Continue;
        };
        let preflight =
            req.method == b"OPTIONS" && req.header(b"access-control-request-method").is_some();
        let ok = self.allowed(origin);
        if preflight {
            if !ok {
                return Verdict::Respond(403);
            }
            let out = &mut e.answer_headers;
            self.allow_lines(out, origin);
            out.extend_from_slice(b"Access-Control-Allow-Methods: ");
            out.extend_from_slice(&self.methods);
            out.extend_from_slice(b"\r\n");
            // No list configured: allow what the browser asks for.
            let headers: &[u8] = if self.headers.is_empty() {
                req.header(b"access-control-request-headers").unwrap_or(b"")
            } else {
                &self.headers
            };
            if !headers.is_empty() {
                out.extend_from_slice(b"Access-Control-Allow-Headers: ");
                out.extend_from_slice(headers);
                out.extend_from_slice(b"\r\n");
            }
            let _ = write!(out, "Access-Control-Max-Age: {}\r\n", self.max_age);
            return Verdict::Respond(204);
        }
        if ok {
            for n in [
                &b"access-control-allow-origin"[..],
                b"access-control-allow-credentials",
                b"access-control-expose-headers",
            ] {
                e.remove_response(n);
            }
            let mut lines = std::mem::take(&mut e.resp_add);
            self.allow_lines(&mut lines, origin);
            if !self.expose.is_empty() {
                lines.extend_from_slice(b"Access-Control-Expose-Headers: ");
                lines.extend_from_slice(&self.expose);
                lines.extend_from_slice(b"\r\n");
            }
            e.resp_add = lines;
        }
        Verdict::Continue
    }
}
