//! Prometheus lines for middleware counters:
//! `ringmesh_forward_auth_total{route, outcome}` (allowed, denied,
//! unreachable, timeout, bad_response), summed over a route's
//! `forward_auth` entries.

use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

use crate::shared::Live;

/// Appends the middleware families to `out` (nothing without a `forward_auth`).
pub fn write(live: &Live, out: &mut String) {
    let mut header = false;
    for r in &live.routes {
        let Some(spec) = &r.chain else { continue };
        let mut sums = [0u64; 5];
        let mut any = false;
        for i in 0..spec.middleware.len() {
            if let Some((_, c)) = spec.forward_auth(i) {
                any = true;
                for (s, v) in sums.iter_mut().zip([
                    &c.allowed,
                    &c.denied,
                    &c.unreachable,
                    &c.timeout,
                    &c.bad_response,
                ]) {
                    *s += v.load(Relaxed);
                }
            }
        }
        if !any {
            continue;
        }
        if !header {
            header = true;
            let _ = writeln!(
                out,
                "# HELP ringmesh_forward_auth_total forward_auth subrequests by outcome.\n# TYPE ringmesh_forward_auth_total counter"
            );
        }
        let route = super::status::escape_label(&r.cfg.name);
        for (outcome, v) in [
            "allowed",
            "denied",
            "unreachable",
            "timeout",
            "bad_response",
        ]
        .iter()
        .zip(sums)
        {
            let _ = writeln!(
                out,
                "ringmesh_forward_auth_total{{route=\"{route}\",outcome=\"{outcome}\"}} {v}"
            );
        }
    }
}
