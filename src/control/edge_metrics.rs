//! Prometheus lines for the edge (PROXY protocol and SNI passthrough):
//! connections closed before reaching a route, by reason.

use std::fmt::Write;

use crate::edge::Refusal;
use crate::shared::Shared;

/// Appends `ringmesh_edge_refused_total{reason=...}` for every reason.
pub fn metrics(shared: &Shared, out: &mut String) {
    let _ = writeln!(
        out,
        "# HELP ringmesh_edge_refused_total Connections closed before routing: bad, missing or slow PROXY header or ClientHello, or no route for the SNI.\n# TYPE ringmesh_edge_refused_total counter"
    );
    for why in Refusal::ALL {
        let _ = writeln!(
            out,
            "ringmesh_edge_refused_total{{reason=\"{}\"}} {}",
            why.as_str(),
            shared.edge.get(why)
        );
    }
}

/// `edge_refused` of `/api/status`: reason -> count.
pub fn status(shared: &Shared) -> serde_json::Value {
    Refusal::ALL
        .iter()
        .map(|&why| (why.as_str().to_string(), shared.edge.get(why).into()))
        .collect::<serde_json::Map<_, _>>()
        .into()
}
