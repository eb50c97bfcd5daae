//! The dashboard: one page served by the API at `/` (and `/index.html`), with
//! its script and style at `/dashboard.js` and `/dashboard.css`. All three are
//! embedded in the binary (`include_str!`): no CDN, no external fonts, nothing
//! fetched from anywhere but the API itself.
//!
//! The page is a client of the API like the CLI: it polls `/api/status` (every
//! 1.5 s; rates per second are computed in the browser), tails
//! `/api/logs/<route>?since=`, kills processes with
//! `POST /api/processes/<route>/<backend>/kill`, and edits the config with
//! `GET`/`PUT /api/config`. Data goes into the DOM as text only
//! (`textContent`), never as markup.
//!
//! Security:
//! - [`SECURITY_HEADERS`] go on every API answer: a Content-Security-Policy
//!   that allows only the API's own origin (no inline script or style: the
//!   page has none), `nosniff`, and `X-Frame-Options: DENY` (no framing, so no
//!   clickjacking of the Kill button).
//! - The page and its assets are public (no bearer token, see [`is_public`]):
//!   a browser cannot send a token with a plain navigation, and they hold no
//!   data. Every API call the page makes carries the token, which the page
//!   asks for once when a call answers 401 and keeps in `sessionStorage`.
//! - The page's mutating calls are same-origin, so the browser sends
//!   `Origin: http://<host>:<port>` as it sees the API. [`own_origin`] says
//!   which such origins are the API's own: its configured address, and when
//!   that is a loopback address, every loopback spelling of it (`localhost`,
//!   `127.0.0.1`, `[::1]`) with the same port.

use std::net::{IpAddr, SocketAddr};

/// The page.
pub const HTML: &str = include_str!("dashboard.html");
/// Its script (loaded with `defer`).
pub const JS: &str = include_str!("dashboard.js");
/// Its style.
pub const CSS: &str = include_str!("dashboard.css");

macro_rules! csp {
    () => {
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    };
}

/// The policy for everything the API serves: the page loads its script,
/// style and API data from its own origin only; no inline code, no plugins,
/// no framing, no form posts elsewhere.
pub const CSP: &str = csp!();

/// Header lines (each ending in CRLF) for every API answer.
pub const SECURITY_HEADERS: &str = concat!(
    "Content-Security-Policy: ",
    csp!(),
    "\r\n",
    "X-Content-Type-Options: nosniff\r\n",
    "X-Frame-Options: DENY\r\n",
    "Referrer-Policy: no-referrer\r\n",
);

/// An embedded file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asset {
    pub ctype: &'static str,
    pub body: &'static str,
}

/// The embedded file at `path` (without a query), if any.
pub fn asset(path: &str) -> Option<Asset> {
    let (ctype, body) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", HTML),
        "/dashboard.js" => ("text/javascript; charset=utf-8", JS),
        "/dashboard.css" => ("text/css; charset=utf-8", CSS),
        _ => return None,
    };
    Some(Asset { ctype, body })
}

/// Whether `path` is one of the dashboard's files, which need no bearer token.
pub fn is_public(path: &str) -> bool {
    asset(path).is_some()
}

/// Whether a browser `Origin` is the API's own, for an API listening on
/// `api`: `http://<api>` itself, and when `api` is a loopback address, the
/// same port under any loopback name (`localhost`, `127.0.0.1`, `[::1]`).
///
/// Only literal loopback names count, never a name that merely resolves to
/// loopback: a DNS-rebinding page at `http://evil.example:<port>` keeps its
/// own origin and stays untrusted.
pub fn own_origin(origin: &str, api: SocketAddr) -> bool {
    let o = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    let Some(hostport) = o.strip_prefix("http://") else {
        return false;
    };
    if hostport == format!("{api}").to_ascii_lowercase() {
        return true;
    }
    if !api.ip().is_loopback() {
        return false;
    }
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) => (h, p),
        None => return false,
    };
    if port.parse::<u16>() != Ok(api.port()) {
        return false;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets() {
        for p in ["/", "/index.html"] {
            let a = asset(p).unwrap();
            assert_eq!(a.ctype, "text/html; charset=utf-8");
            assert!(a.body.contains("/dashboard.js") && a.body.contains("/dashboard.css"));
        }
        assert_eq!(
            asset("/dashboard.js").unwrap().ctype,
            "text/javascript; charset=utf-8"
        );
        assert_eq!(
            asset("/dashboard.css").unwrap().ctype,
            "text/css; charset=utf-8"
        );
        assert!(asset("/api/status").is_none());
        assert!(asset("/index.htm").is_none());
        assert!(is_public("/") && !is_public("/api/config") && !is_public("/healthz"));
    }

    #[test]
    fn page_has_no_inline_code() {
        // The CSP allows no inline script or style: the page must not need any.
        let lower = HTML.to_ascii_lowercase();
        assert!(
            !lower.contains("<style"),
            "inline <style> in dashboard.html"
        );
        assert!(!lower.contains(" style="), "inline style attribute");
        let b = lower.as_bytes();
        for (i, _) in lower.match_indices(" on") {
            let name_end = b[i + 3..].iter().position(|c| !c.is_ascii_lowercase());
            let after = name_end.map(|n| b[i + 3 + n]);
            assert!(after != Some(b'='), "inline event handler attribute at {i}");
        }
        for (i, _) in lower.match_indices("<script") {
            let tag = &lower[i..i + lower[i..].find('>').unwrap()];
            assert!(tag.contains("src="), "inline <script>: {tag}");
        }
        assert!(
            !lower.contains("http://") && !lower.contains("https://"),
            "external URL in the page"
        );
        assert!(
            !JS.contains("innerHTML")
                && !JS.contains("outerHTML")
                && !JS.contains("insertAdjacentHTML")
        );
        assert!(!JS.contains("eval(") && !JS.contains("document.write"));
        assert!(SECURITY_HEADERS.contains(CSP));
    }

    #[test]
    fn own_origins() {
        let lo: SocketAddr = "127.0.0.1:9999".parse().unwrap();
        for o in [
            "http://127.0.0.1:9999",
            "http://127.0.0.1:9999/",
            "HTTP://LOCALHOST:9999",
            "http://localhost:9999",
            "http://[::1]:9999",
            "http://127.0.0.2:9999",
        ] {
            assert!(own_origin(o, lo), "{o}");
        }
        for o in [
            "http://localhost:9998",
            "https://localhost:9999",
            "http://evil.example:9999",
            "http://localhost.evil.example:9999",
            "http://10.0.0.1:9999",
            "http://localhost",
            "null",
            "",
        ] {
            assert!(!own_origin(o, lo), "{o}");
        }
        let v6: SocketAddr = "[::1]:8000".parse().unwrap();
        assert!(own_origin("http://[::1]:8000", v6));
        assert!(own_origin("http://localhost:8000", v6));
        // A public address: only itself.
        let pubaddr: SocketAddr = "192.0.2.7:9999".parse().unwrap();
        assert!(own_origin("http://192.0.2.7:9999", pubaddr));
        assert!(!own_origin("http://localhost:9999", pubaddr));
        assert!(!own_origin("http://127.0.0.1:9999", pubaddr));
    }
}
