//! The HTTP/2 server side (ringmesh's `h2::server::drive`: the `h2` crate
//! behind ringmesh's frame-budget wire) fed arbitrary bytes after the
//! connection preface, over an in-memory duplex pipe on a monoio runtime.
//!
//! Invariants beyond "no panic":
//! - the connection always ends (the client half closes after the input;
//!   a 5 s bound fails the run if the driver hangs);
//! - every accepted stream is answered (200, tiny body) without panicking,
//!   whatever its pseudo-headers;
//! - the bytes the server writes back are bounded (flow control and the
//!   limits keep a small input from producing unbounded output).
#![no_main]

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use ringmesh::config::Http2;
use ringmesh::h2::{server, PREFACE};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

thread_local! {
    static RT: RefCell<monoio::Runtime<monoio::time::TimeDriver<monoio::LegacyDriver>>> = RefCell::new(
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("runtime"),
    );
}

fuzz_target!(|data: &[u8]| {
    RT.with(|rt| {
        rt.borrow_mut().block_on(async {
            let (mut client, server_io) = tokio::io::duplex(64 * 1024);
            let cfg = Http2 {
                frame_budget: 200,
                ..Http2::default()
            };
            let out = Rc::new(Cell::new(0usize));
            let input = data.to_vec();
            let o = out.clone();
            let peer = async move {
                let mut wire = PREFACE.to_vec();
                wire.extend_from_slice(&input);
                let (mut r, mut w) = tokio::io::split(&mut client);
                let write = async {
                    let _ = w.write_all(&wire).await;
                    let _ = w.shutdown().await;
                };
                let read = async {
                    let mut b = vec![0u8; 16 * 1024];
                    while let Ok(n) = r.read(&mut b).await {
                        if n == 0 {
                            break;
                        }
                        o.set(o.get() + n);
                    }
                };
                monoio::join!(write, read);
            };
            let drive = server::drive(
                server_io,
                Vec::new(),
                &cfg,
                std::future::pending::<()>(),
                |_req, mut respond, token| {
                    monoio::spawn(async move {
                        let _token = token;
                        let resp = http::Response::builder().status(200).body(()).unwrap();
                        if let Ok(mut tx) = respond.send_response(resp, false) {
                            let _ = tx.send_data(bytes::Bytes::from_static(b"ok"), true);
                        }
                    });
                },
            );
            let both = async {
                monoio::join!(drive, peer);
            };
            monoio::select! {
                _ = both => {}
                _ = monoio::time::sleep(Duration::from_secs(5)) => panic!("h2 server did not end"),
            }
            // A response per stream, SETTINGS, PINGs and a GOAWAY: bounded by the input.
            assert!(out.get() <= 4096 + 64 * data.len(), "{} bytes out for {} in", out.get(), data.len());
        })
    });
});
