//! Path middleware: `strip_prefix`, `add_prefix`, `rewrite` (regex with
//! captures) change the target sent upstream; `redirect` answers with a
//! `Location` built from a template. The query string is kept as is.

use std::cell::RefCell;

use regex::bytes::{CaptureLocations, Regex};

use super::{Edits, Filter, Request, Verdict};

/// (path, query with its `?`, or empty).
fn split(target: &[u8]) -> (&[u8], &[u8]) {
    match memchr::memchr(b'?', target) {
        Some(i) => target.split_at(i),
        None => (target, &[]),
    }
}

pub struct StripPrefix {
    prefix: Vec<u8>,
}

impl StripPrefix {
    pub fn new(prefix: &str) -> StripPrefix {
        StripPrefix {
            prefix: prefix.as_bytes().to_vec(),
        }
    }
}

impl Filter for StripPrefix {
    fn upstream_request_filter(&self, req: &Request<'_>, e: &mut Edits) {
        let (path, _) = split(e.target(req.target));
        let Some(rest) = path.strip_prefix(self.prefix.as_slice()) else {
            return;
        };
        // Only at a segment boundary: /api strips /api and /api/x, not /apix.
        if !(rest.is_empty() || rest.starts_with(b"/")) {
            return;
        }
        let cut = self.prefix.len();
        e.rewrite_target(req.target, |cur, out| {
            let rest = cur.get(cut..).unwrap_or(&[]);
            if !rest.starts_with(b"/") {
                out.push(b'/');
            }
            out.extend_from_slice(rest);
        });
    }
}

pub struct AddPrefix {
    prefix: Vec<u8>,
}

impl AddPrefix {
    pub fn new(prefix: &str) -> AddPrefix {
        AddPrefix {
            prefix: prefix.as_bytes().to_vec(),
        }
    }
}

impl Filter for AddPrefix {
    fn upstream_request_filter(&self, req: &Request<'_>, e: &mut Edits) {
        e.rewrite_target(req.target, |cur, out| {
            out.extend_from_slice(&self.prefix);
            if !cur.starts_with(b"/") {
                out.push(b'/');
            }
            out.extend_from_slice(cur);
        });
    }
}

pub struct Rewrite {
    regex: Regex,
    replacement: Vec<u8>,
    /// Reused capture positions (this worker's own: no allocation per request).
    locs: RefCell<CaptureLocations>,
}

impl Rewrite {
    /// `regex` was validated with the config.
    pub fn new(regex: &str, replacement: &str) -> Rewrite {
        let regex = Regex::new(regex).unwrap_or_else(|_| Regex::new("$^").expect("valid"));
        let locs = RefCell::new(regex.capture_locations());
        Rewrite {
            regex,
            replacement: replacement.as_bytes().to_vec(),
            locs,
        }
    }
}

/// Appends `template` with `$0`..`$9` replaced by the captures of `hay`.
fn expand(template: &[u8], hay: &[u8], locs: &CaptureLocations, out: &mut Vec<u8>) {
    let mut i = 0;
    while i < template.len() {
        let b = template[i];
        if b == b'$' {
            if let Some(d) = template.get(i + 1).filter(|d| d.is_ascii_digit()) {
                if let Some((s, e)) = locs.get(usize::from(d - b'0')) {
                    out.extend_from_slice(hay.get(s..e).unwrap_or(&[]));
                }
                i += 2;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
}

impl Filter for Rewrite {
    fn upstream_request_filter(&self, req: &Request<'_>, e: &mut Edits) {
        let mut locs = self.locs.borrow_mut();
        let (path, _) = split(e.target(req.target));
        if self.regex.captures_read(&mut locs, path).is_none() {
            return;
        }
        e.rewrite_target(req.target, |cur, out| {
            let (path, query) = split(cur);
            expand(&self.replacement, path, &locs, out);
            out.extend_from_slice(query);
        });
    }
}

pub struct Redirect {
    status: u16,
    scheme: Vec<u8>,
    host: Option<Vec<u8>>,
    template: Vec<u8>,
    /// The Location being built (reused).
    buf: RefCell<Vec<u8>>,
}

impl Redirect {
    pub fn new(status: u16, scheme: Option<&str>, host: Option<&str>, template: &str) -> Redirect {
        Redirect {
            status,
            scheme: scheme.unwrap_or("http").as_bytes().to_vec(),
            host: host.map(|h| h.as_bytes().to_vec()),
            template: template.as_bytes().to_vec(),
            buf: RefCell::new(Vec::new()),
        }
    }
}

impl Filter for Redirect {
    fn request_filter(&self, req: &Request<'_>, e: &mut Edits) -> Verdict {
        let (path, query) = split(req.target);
        let mut loc = self.buf.borrow_mut();
        loc.clear();
        let host = self
            .host
            .as_deref()
            .or_else(|| req.header(b"host"))
            .unwrap_or(b"localhost");
        loc.extend_from_slice(&self.scheme);
        loc.extend_from_slice(b"://");
        loc.extend_from_slice(host);
        let t = &self.template;
        let mut i = 0;
        while i < t.len() {
            if t[i..].starts_with(b"{path}") {
                loc.extend_from_slice(path);
                i += 6;
            } else if t[i..].starts_with(b"{query}") {
                loc.extend_from_slice(query);
                i += 7;
            } else {
                loc.push(t[i]);
                i += 1;
            }
        }
        e.answer_headers.extend_from_slice(b"Location: ");
        e.answer_headers.extend_from_slice(&loc);
        e.answer_headers.extend_from_slice(b"\r\n");
        Verdict::Respond(self.status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_captures() {
        let re = Regex::new(r"^/old/(\w+)/(\d+)$").unwrap();
        let mut locs = re.capture_locations();
        let hay = b"/old/user/42";
        assert!(re.captures_read(&mut locs, hay).is_some());
        let mut out = Vec::new();
        expand(b"/new/$2/$1/$9$", hay, &locs, &mut out);
        assert_eq!(out, b"/new/42/user/$");
    }
}
