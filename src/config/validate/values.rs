//! Scalar values of the config: ports, listen addresses, host resolution, durations
//! (a section of `validate.rs`).

use super::*;

pub(super) fn overlaps(a: Option<IpAddr>, b: IpAddr) -> bool {
    match a {
        None => true,
        Some(a) => a == b || a.is_unspecified() || b.is_unspecified(),
    }
}

pub(super) fn port_value(v: &Value) -> Result<Option<u16>, String> {
    let n = match v {
        Value::String(s) if s.trim().is_empty() => return Ok(None),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    };
    match n {
        Some(n) if (1..=65535).contains(&n) => Ok(Some(n as u16)),
        Some(_) => Err(format!("{} is out of range (1-65535)", show(v))),
        None => Err(format!("{} is not a port number", show(v))),
    }
}

pub(super) fn listen_value(v: &Value, default_host: IpAddr) -> Result<SocketAddr, String> {
    if let Ok(Some(p)) = port_value(v) {
        return Ok(SocketAddr::new(default_host, p));
    }
    if let Value::String(s) = v {
        if let Ok(a) = s.trim().parse::<SocketAddr>() {
            if a.port() != 0 {
                return Ok(a);
            }
        }
    }
    Err(format!("{} is not a port or an ip:port address", show(v)))
}

pub(super) fn resolve(host: &str, port: u16) -> Result<SocketAddr, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    match (host, port).to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| format!("{host:?} resolves to no address")),
        Err(e) => Err(format!("cannot resolve {host:?}: {e}")),
    }
}

pub(in crate::config) fn valid_host_pattern(h: &str) -> bool {
    let name = h.strip_prefix("*.").unwrap_or(h);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Durations: a string with a unit (`"250ms"`, `"5s"`, `"2m"`, `"1h"`) or a number of seconds.
pub fn duration_value(v: &Value) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{} is not a duration; write e.g. \"500ms\", \"30s\", \"5m\" or a number of seconds",
            show(v)
        )
    };
    let d = match v {
        Value::Number(n) => {
            let secs = n.as_f64().ok_or_else(bad)?;
            if !(0.0..=1e9).contains(&secs) {
                return Err(bad());
            }
            Duration::from_secs_f64(secs)
        }
        Value::String(s) => parse_duration(s.trim()).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    if d.is_zero() {
        return Err(format!("{} must be greater than zero", show(v)));
    }
    Ok(d)
}

pub(super) fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return None,
    };
    if !(0.0..=1e9).contains(&secs) {
        return None;
    }
    Some(Duration::from_secs_f64(secs))
}
