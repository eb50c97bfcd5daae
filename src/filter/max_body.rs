//! `max_body`: `413 Content Too Large` for a request body over the limit.
//!
//! A Content-Length over the limit is refused before anything goes
//! upstream (the connection then closes: the body is not read). A chunked
//! body's size is only known as it streams: this filter sets
//! [`Edits::body_limit`] and the exchange's chunked scanner fails the body
//! at the size line of the first chunk that takes it over the limit, before
//! that chunk's data is forwarded. If nothing went upstream yet, the client
//! gets `413`; otherwise the upstream exchange is aborted (its connection
//! closed, never pooled) and the client gets `413` and a close, unless the
//! response already began (then the connection just closes).

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
    fn request_filter(&self, req: &Request<'_>, e: &mut Edits) -> Verdict {
        // The head parser already checked that Content-Length is one valid
        // number, and that a body is framed by one of the two, not both.
        let len = req
            .header(b"content-length")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        match len {
            Some(n) if n > self.max => Verdict::Respond(413),
            Some(_) => Verdict::Continue,
            None => {
                if req.header(b"transfer-encoding").is_some() {
                    e.body_limit = Some(e.body_limit.map_or(self.max, |l| l.min(self.max)));
                }
                Verdict::Continue
            }
        }
    }
}
