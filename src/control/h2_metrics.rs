//! Prometheus lines for the HTTP/2 counters (`ringmesh_h2_*`).

use std::fmt::Write;

use crate::shared::H2Counters;

/// Appends every `ringmesh_h2_*` family to `out`.
pub fn write(c: &H2Counters, out: &mut String) {
    for (suffix, help, v) in c.rows() {
        let _ = writeln!(
            out,
            "# HELP ringmesh_h2_{suffix} {help}\n# TYPE ringmesh_h2_{suffix} counter\nringmesh_h2_{suffix} {v}"
        );
    }
}
