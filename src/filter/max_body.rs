//! `max_body`: `413 Content Too Large` for a request whose Content-Length
//! is over the limit, before anything goes upstream (the connection then
//! closes: the body is not read). A chunked body is not checked yet (its
//! size is only known as it streams).

use super::{Edits, Filter, Request, Verdict};

pub struct MaxBody {
    max: u64,
}

impl MaxBody {
    pub fn new(max: u64) -> MaxBody {
        MaxBody { max }
    }
}

impl Filter for MaxBody {
    fn request_filter(&self, req: &Request<'_>, _e: &mut Edits) -> Verdict {
        // The head parser already checked that Content-Length is one valid number.
        let len = req
            .header(b"content-length")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match len {
            Some(n) if n > self.max => Verdict::Respond(413),
            _ => Verdict::Continue,
        }
    }
}
