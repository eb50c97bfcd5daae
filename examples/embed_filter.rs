//! Embeds ringmesh with a filter of its own: `tag` adds `X-Tag: <value>` to
//! every response and answers `403` for paths under `/forbidden`, and
//! counts requests in its logging phase.
//!
//! Usage: `embed_filter <listen port> <backend port>`; prints `ready` once
//! it serves, stops on stdin EOF or Ctrl-C.

use std::cell::Cell;
use std::io::Read;

use ringmesh::filter::{Edits, Filter, Request, Verdict};
use ringmesh::{Engine, EngineOptions};

/// One per worker: no `Send` or `Sync` needed, a `Cell` will do.
struct Tag {
    value: Vec<u8>,
    seen: Cell<u64>,
}

impl Filter for Tag {
    fn request_filter(&self, req: &Request<'_>, _e: &mut Edits) -> Verdict {
        if req.target.starts_with(b"/forbidden") {
            return Verdict::Respond(403);
        }
        Verdict::Continue
    }

    fn response_filter(&self, _status: u16, e: &mut Edits) {
        e.add_response(b"X-Tag", &self.value);
    }

    fn logging(&self, _status: u16, _e: &Edits) {
        self.seen.set(self.seen.get() + 1);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(port), Some(backend)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: embed_filter <listen port> <backend port>");
        std::process::exit(64);
    };
    // Register first: the config below refers to "tag".
    Engine::filter("tag", |v| {
        let value = v
            .get("value")
            .and_then(|x| x.as_str())
            .ok_or("tag needs a string \"value\"")?;
        Ok(Box::new(Tag {
            value: value.as_bytes().to_vec(),
            seen: Cell::new(0),
        }))
    });
    let config = format!(
        r#"{{"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 1,
  "routes": {{"{port}": {{"middleware": [{{"type": "tag", "value": "embedded"}}],
  "backends": [{{"name": "b", "internal_port": {backend}}}]}}}}}}"#
    );
    let snapshot = match ringmesh::config::parse(&config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(64);
        }
    };
    let engine = Engine::new(
        snapshot,
        EngineOptions {
            config_text: config,
            ..Default::default()
        },
    );
    let handle = engine.handle();
    // Stop when stdin closes (the test's way of saying "done").
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        handle.shutdown();
    });
    println!("ready");
    if let Err(e) = engine.run() {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
