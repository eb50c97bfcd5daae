//! Backends and health checks of a route (a section of `validate.rs`).

use super::*;

impl Validator {
    /// `health`: absent or `false` = no active checks (passive marking only),
    /// `true` = the defaults, or an object overriding some of them.
    ///
    /// Why opt-in: checks open connections to every backend every interval,
    /// which shows up in backends' logs and connection counts; a GopherMesh
    /// config keeps behaving as before.
    pub(super) fn health(
        &mut self,
        m: &Map<String, Value>,
        path: &str,
        protocol: Protocol,
    ) -> Option<HealthCheck> {
        let mut h = HealthCheck::default();
        let p = field_path(path, "health");
        let hm = match m.get("health") {
            Some(Value::Bool(true)) => return Some(h),
            None | Some(Value::Null) | Some(Value::Bool(false)) => return None,
            Some(Value::Object(hm)) => hm,
            Some(other) => {
                self.err(
                    p,
                    format!(
                        "expected an object (or false to disable checks), found {}",
                        show(other)
                    ),
                );
                return None;
            }
        };
        self.check_fields(hm, &p, HEALTH_FIELDS);
        if let Some(s) = self.string(hm, &p, "path") {
            let pp = field_path(&p, "path");
            if protocol == Protocol::Tcp {
                self.err(
                    pp,
                    "an HTTP check needs protocol \"http\"; a tcp route is checked by connecting",
                );
            } else if !s.starts_with('/')
                || s.len() > 1024
                || s.bytes().any(|b| b <= b' ' || b == 0x7f)
            {
                self.err(
                    pp,
                    format!(
                        "{} is not a request path (starts with '/', no spaces or control characters, at most 1024 bytes)",
                        show(&Value::String(s))
                    ),
                );
            } else {
                h.path = Some(s);
            }
        }
        if let Some(code) = self.uint(hm, &p, "expect_status", 999) {
            if (100..=599).contains(&code) {
                h.expect_status = code as u16;
            } else {
                self.err(
                    field_path(&p, "expect_status"),
                    format!("{code} is not an HTTP status (100-599)"),
                );
            }
        }
        if let Some(d) = self.duration(hm, &p, "interval") {
            h.interval = d;
        }
        if let Some(d) = self.duration(hm, &p, "timeout") {
            h.timeout = d;
        }
        for (key, slot) in [("rise", &mut h.rise), ("fall", &mut h.fall)] {
            if let Some(n) = self.uint(hm, &p, key, 100) {
                if n == 0 {
                    self.err(field_path(&p, key), "must be at least 1");
                } else {
                    *slot = n as u32;
                }
            }
        }
        Some(h)
    }

    pub(super) fn backends(
        &mut self,
        m: &Map<String, Value>,
        path: &str,
        dashboard_port: Option<u16>,
        route_ready_timeout: Duration,
        discover: &mut Vec<crate::config::discover::Discover>,
    ) -> Vec<Backend> {
        let p = field_path(path, "backends");
        let items = match m.get("backends") {
            None | Some(Value::Null) => {
                self.err(p, "a route needs at least one backend");
                return Vec::new();
            }
            Some(Value::Array(items)) if items.is_empty() => {
                self.err(p, "a route needs at least one backend");
                return Vec::new();
            }
            Some(Value::Array(items)) => items,
            Some(other) => {
                self.err(
                    p,
                    format!("expected an array of backends, found {}", show(other)),
                );
                return Vec::new();
            }
        };
        let mut out: Vec<Backend> = Vec::with_capacity(items.len());
        for (i, bv) in items.iter().enumerate() {
            let bp = format!("{p}[{i}]");
            let Some(bm) = self.object(bv, &bp) else {
                continue;
            };
            if bm.contains_key("discover") {
                let d = crate::config::discover::parse(bm, &bp, &mut |p, m| self.err(p, m));
                match d {
                    Some(d) if discover.iter().any(|o| o.dns == d.dns) => self.err(
                        field_path(&bp, "discover.dns"),
                        format!("{:?} is discovered twice in this route", d.dns),
                    ),
                    d => discover.extend(d),
                }
                continue;
            }
            self.check_fields(bm, &bp, BACKEND_FIELDS);
            let weight = match self.uint(bm, &bp, "weight", 1000) {
                Some(0) => {
                    self.err(field_path(&bp, "weight"), "must be at least 1 (1-1000)");
                    1
                }
                Some(w) => w as u32,
                None => 1,
            };
            let cmd = self
                .string(bm, &bp, "cmd")
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty() && !s.eq_ignore_ascii_case("internal"));
            let args = self.strings(bm, &bp, "args");
            if cmd.is_none() && !args.is_empty() {
                self.err(field_path(&bp, "args"), "args given without a cmd to run");
            }
            let ready_timeout = self.duration(bm, &bp, "ready_timeout");
            if cmd.is_none() && ready_timeout.is_some() {
                self.err(
                    field_path(&bp, "ready_timeout"),
                    "ready_timeout given without a cmd to run",
                );
            }
            let ready_timeout = ready_timeout.unwrap_or(route_ready_timeout);
            let send_proxy = crate::config::edge::backend(bm, &bp, &mut self.errors);
            let host = self
                .string(bm, &bp, "internal_host")
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "127.0.0.1".to_string());
            let port = match self.port(bm, &bp, "internal_port") {
                Err(()) => None,
                Ok(Some(p)) => Some(p),
                // GopherMesh: an internal backend without a port is the dashboard.
                Ok(None) if cmd.is_none() && dashboard_port.is_some() => dashboard_port,
                Ok(None) => {
                    self.err(
                        field_path(&bp, "internal_port"),
                        "missing; the backend's port is required",
                    );
                    None
                }
            };
            let name = self
                .string(bm, &bp, "name")
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty());
            let h2c = crate::config::http2::backend_h2c(
                bm.get("protocol"),
                &field_path(&bp, "protocol"),
                &mut self.errors,
            );
            let tls = crate::config::upstream_tls::backend_tls(
                bm,
                &bp,
                &host,
                &self.base,
                &format!("{path}/{}", name.as_deref().unwrap_or(&host)),
                &mut self.errors,
            );
            let Some(port) = port else { continue };
            let addr = match resolve(&host, port) {
                Ok(a) => a,
                Err(msg) => {
                    self.err(field_path(&bp, "internal_host"), msg);
                    continue;
                }
            };
            let name = name.unwrap_or_else(|| format!("{host}:{port}"));
            if out.iter().any(|b| b.name == name) {
                self.err(
                    field_path(&bp, "name"),
                    format!(
                        "{} is used by another backend of this route",
                        show(&Value::String(name.clone()))
                    ),
                );
                continue;
            }
            out.push(Backend {
                name,
                cmd,
                args,
                host,
                port,
                addr,
                ready_timeout,
                send_proxy,
                weight,
                priority: 0,
                discovered: false,
                h2c,
                tls,
            });
        }
        if out.iter().any(|b| b.h2c) && !out.iter().all(|b| b.h2c) {
            self.err(
                p.clone(),
                "backends of one route must all use the same protocol",
            );
        }
        out
    }
}
