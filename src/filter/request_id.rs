//! `request_id`: every request carries an id, sent upstream, returned to
//! the client and written to the access log. A client's id is kept only
//! with `trust` (and only when it is a short printable token); otherwise a
//! UUID v7 (time-ordered, RFC 9562) is generated.

use super::{Edits, Filter, Request, Verdict};

/// Longest client-supplied id kept.
const MAX_ID: usize = 200;

pub struct RequestId {
    header: Vec<u8>,
    trust: bool,
}

impl RequestId {
    pub fn new(header: &str, trust: bool) -> RequestId {
        RequestId {
            header: header.as_bytes().to_vec(),
            trust,
        }
    }
}

fn acceptable(id: &[u8]) -> bool {
    !id.is_empty() && id.len() <= MAX_ID && id.iter().all(|b| b.is_ascii_graphic())
}

impl Filter for RequestId {
    fn request_filter(&self, req: &Request<'_>, e: &mut Edits) -> Verdict {
        e.request_id.clear();
        match req
            .header(&self.header)
            .filter(|v| self.trust && acceptable(v))
        {
            Some(v) => e.request_id.extend_from_slice(v),
            None => {
                let mut buf = uuid::Uuid::encode_buffer();
                let s = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buf);
                e.request_id.extend_from_slice(s.as_bytes());
            }
        }
        Verdict::Continue
    }

    fn upstream_request_filter(&self, _req: &Request<'_>, e: &mut Edits) {
        e.remove_request(&self.header);
        let id = std::mem::take(&mut e.request_id);
        e.add_request(&self.header, &id);
        e.request_id = id;
    }

    fn response_filter(&self, _status: u16, e: &mut Edits) {
        if e.request_id.is_empty() {
            return;
        }
        e.remove_response(&self.header);
        let id = std::mem::take(&mut e.request_id);
        e.add_response(&self.header, &id);
        e.request_id = id;
    }
}
