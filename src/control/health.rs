//! Active health checks, one task per backend on the control thread.
//!
//! A check is a TCP connect, or for http routes with `health.path` a
//! `GET <path>` whose status must be `expect_status`. `fall` failures in a row
//! make a backend unhealthy (workers stop giving it new connections), `rise`
//! successes in a row make it healthy again; an unknown backend becomes
//! healthy on its first success. A backend whose process is not running is
//! not checked: it is napping or stopped, and starts on demand.
//!
//! Passive marking stays with the data plane: a failed connect puts a backend
//! in a short cooldown (`BackendState::mark_failed`). Workers skip a backend
//! that is unhealthy or cooling down.

use std::io::Write as _;
use std::rc::Rc;
use std::time::{Duration, Instant};

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};

use crate::config::{HealthCheck, Protocol};
use crate::control::supervisor::{Entry, Registry};
use crate::shared::Health;

/// Largest response head a check reads.
const MAX_HEAD: usize = 16 * 1024;
/// How often a task whose checks are off or whose process is down looks again.
const IDLE_LOOK: Duration = Duration::from_millis(250);

/// Checks `e` until it leaves the config or ringmesh shuts down.
pub async fn run(e: Rc<Entry>, reg: Rc<Registry>) {
    let mut ok_run = 0u32;
    let mut fail_run = 0u32;
    loop {
        if e.removed.get() || reg.shutting_down() {
            return;
        }
        let hc = e.cfg.borrow().health.clone();
        let Some(hc) = hc else {
            e.state.set_health(Health::Unknown);
            e.refresh_status();
            monoio::time::sleep(IDLE_LOOK).await;
            continue;
        };
        if e.managed() && !e.state.ready() {
            // Not running: nothing to check; the supervisor owns its status.
            ok_run = 0;
            fail_run = 0;
            e.refresh_status();
            monoio::time::sleep(IDLE_LOOK.min(hc.interval)).await;
            continue;
        }
        let t0 = Instant::now();
        let result = check(&e, &hc).await;
        let latency = t0.elapsed();
        if e.managed() && !e.state.ready() {
            continue; // stopped while we checked: the result means nothing
        }
        let before = e.state.health();
        let after = match &result {
            Ok(()) => {
                ok_run += 1;
                fail_run = 0;
                match before {
                    Health::Unhealthy if ok_run < hc.rise => Health::Unhealthy,
                    _ => Health::Healthy,
                }
            }
            Err(_) => {
                fail_run += 1;
                ok_run = 0;
                if fail_run >= hc.fall {
                    Health::Unhealthy
                } else {
                    before
                }
            }
        };
        if after != before {
            match &result {
                Ok(()) => tracing::info!(
                    route = %e.route_key, backend = %e.backend,
                    "backend healthy ({} check(s) passed)", ok_run
                ),
                Err(msg) => tracing::warn!(
                    route = %e.route_key, backend = %e.backend,
                    "backend unhealthy after {fail_run} failed check(s): {msg}"
                ),
            }
        }
        e.state.set_health(after);
        {
            let mut h = e.health.borrow_mut();
            h.latency = Some(latency);
            h.detail = result.err().unwrap_or_default();
        }
        e.refresh_status();
        monoio::time::sleep(hc.interval).await;
    }
}

/// One check, bounded by `hc.timeout`; the error is the detail the API shows.
async fn check(e: &Entry, hc: &HealthCheck) -> Result<(), String> {
    let (addr, host, http, send_proxy, tls) = {
        let c = e.cfg.borrow();
        let http = c.protocol == Protocol::Http && hc.path.is_some();
        (c.addr, c.host.clone(), http, c.send_proxy, c.tls.clone())
    };
    let work = async {
        let mut stream = crate::proxy::connect::connect_timeout(addr, hc.timeout)
            .await
            .map_err(|err| format!("connect {addr}: {err}"))?;
        // A TLS backend is up when its handshake completes (and, with a
        // path, when it answers over TLS); `send_proxy` excludes `tls`.
        if let Some(cfg) = &tls {
            let deadline = monoio::time::Instant::now() + hc.timeout;
            let t = crate::tls::client::handshake(&stream, cfg, deadline)
                .await
                .map_err(|err| format!("TLS handshake with {addr}: {err}"))?;
            if !http {
                // A polite close (close_notify), so the backend logs no error.
                let t = std::cell::RefCell::new(t);
                crate::tls::session::close(&stream, &t, hc.timeout).await;
                return Ok(());
            }
            let path = hc.path.as_deref().unwrap_or("/");
            let req = check_request(Vec::new(), &host, addr.port(), path);
            return tls_http_check(&stream, t, req, path, hc.expect_status, deadline).await;
        }
        // A backend that expects PROXY headers gets one saying "no client".
        let mut req = Vec::new();
        if let Some(v) = send_proxy {
            crate::edge::proxy_protocol::write_local(v, &mut req);
        }
        if !http {
            if !req.is_empty() {
                let _ = stream.write_all(req).await;
            }
            return Ok(());
        }
        let path = hc.path.as_deref().unwrap_or("/");
        http_check(stream, req, &host, addr.port(), path, hc.expect_status).await
    };
    match monoio::time::timeout(hc.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {:?}", hc.timeout)),
    }
}

async fn http_check(
    mut stream: monoio::net::TcpStream,
    req: Vec<u8>,
    host: &str,
    port: u16,
    path: &str,
    expect: u16,
) -> Result<(), String> {
    let req = check_request(req, host, port, path);
    let (r, _) = stream.write_all(req).await;
    r.map_err(|err| format!("sending the check request: {err}"))?;
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let chunk = Vec::with_capacity(4096);
        let (r, chunk) = stream.read(chunk).await;
        match r {
            Ok(0) => return Err("connection closed before a response head".into()),
            Ok(_) => buf.extend_from_slice(&chunk),
            Err(err) => return Err(format!("reading the response: {err}")),
        }
        if let Some(r) = verdict(&buf, path, expect) {
            return r;
        }
    }
}

fn check_request(mut req: Vec<u8>, host: &str, port: u16, path: &str) -> Vec<u8> {
    let _ = write!(
        req,
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: ringmesh-health\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    req
}

/// The check's result once `buf` holds a response head (`None`: not yet).
fn verdict(buf: &[u8], path: &str, expect: u16) -> Option<Result<(), String>> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {
            let code = resp.code.unwrap_or(0);
            Some(if code == expect {
                Ok(())
            } else {
                Err(format!("GET {path} answered {code}, expected {expect}"))
            })
        }
        Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => None,
        Ok(httparse::Status::Partial) => Some(Err("response head too large".into())),
        Err(err) => Some(Err(format!("invalid response: {err}"))),
    }
}

/// [`http_check`] through a TLS session.
async fn tls_http_check(
    stream: &monoio::net::TcpStream,
    t: crate::tls::TlsConn,
    req: Vec<u8>,
    path: &str,
    expect: u16,
    deadline: monoio::time::Instant,
) -> Result<(), String> {
    use crate::tls::session;
    let t = std::cell::RefCell::new(t);
    let stall = deadline.saturating_duration_since(monoio::time::Instant::now());
    session::write_all(stream, &t, &req, stall)
        .await
        .map_err(|err| format!("sending the check request: {err}"))?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        match session::read(stream, &t, &mut buf, MAX_HEAD, deadline).await {
            Ok(0) => return Err("connection closed before a response head".into()),
            Ok(_) => {}
            Err(err) => return Err(format!("reading the response: {err}")),
        }
        if let Some(r) = verdict(&buf, path, expect) {
            t.borrow_mut().release();
            return r;
        }
    }
}

/// Whether `addr` accepts a connection (and, for a TLS backend, completes
/// a handshake) within `timeout`: the cold-start readiness probe.
pub async fn probe(
    addr: std::net::SocketAddr,
    tls: Option<&crate::tls::client::ClientTls>,
    timeout: Duration,
) -> bool {
    let Ok(stream) = crate::proxy::connect::connect_timeout(addr, timeout).await else {
        return false;
    };
    match tls {
        None => true,
        Some(cfg) => {
            let deadline = monoio::time::Instant::now() + timeout;
            match crate::tls::client::handshake(&stream, cfg, deadline).await {
                Ok(t) => {
                    let t = std::cell::RefCell::new(t);
                    crate::tls::session::close(&stream, &t, timeout).await;
                    t.borrow_mut().release();
                    true
                }
                Err(_) => false,
            }
        }
    }
}
