//! `headers`: set, add and remove request and response header fields.

use crate::config::middleware::HeaderOps;

use super::{Edits, Filter, Request};

/// One direction's operations, as bytes.
struct Ops {
    /// Names removed: `remove` and the names of `set`.
    remove: Vec<Vec<u8>>,
    /// Lines added: `set` and `add`.
    add: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Ops {
    fn new(o: &HeaderOps) -> Ops {
        let mut remove: Vec<Vec<u8>> = o.remove.iter().map(|n| n.as_bytes().to_vec()).collect();
        remove.extend(
            o.set
                .iter()
                .map(|(n, _)| n.to_ascii_lowercase().into_bytes()),
        );
        let add = o
            .set
            .iter()
            .chain(o.add.iter())
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect();
        Ops { remove, add }
    }
}

pub struct Headers {
    request: Ops,
    response: Ops,
}

impl Headers {
    pub fn new(request: &HeaderOps, response: &HeaderOps) -> Headers {
        Headers {
            request: Ops::new(request),
            response: Ops::new(response),
        }
    }
}

impl Filter for Headers {
    fn upstream_request_filter(&self, _req: &Request<'_>, e: &mut Edits) {
        for n in &self.request.remove {
            e.remove_request(n);
        }
        for (n, v) in &self.request.add {
            e.add_request(n, v);
        }
    }

    fn response_filter(&self, _status: u16, e: &mut Edits) {
        for n in &self.response.remove {
            e.remove_response(n);
        }
        for (n, v) in &self.response.add {
            e.add_response(n, v);
        }
    }
}
