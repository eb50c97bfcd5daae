//! What one HTTP/2 stream costs the server side, measured: heap allocations
//! and bytes allocated per stream on the worker thread (the `h2` state
//! machine, our driver and wire, a spawned task per stream answering a
//! 13-byte body with five response fields; requests carry four fields), counted by a test allocator over 1 and 201 streams on one
//! connection. The client (the `h2` crate's own) runs on another thread so
//! its allocations are not counted. `cargo test --lib h2::cost -- --nocapture`
//! prints the figures; the module doc quotes them.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::Duration;

use bytes::Bytes;

use crate::config::Http2;

struct Counting;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: defers every call to `System` unchanged; the counters are
// const-initialised thread-locals (no allocation, no re-entrancy).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: `p` came from `System` with `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(new);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(p, l, new) }
    }
}

fn note(size: usize) {
    let _ = ON.try_with(|on| {
        if on.get() {
            ALLOCS.with(|a| a.set(a.get() + 1));
            BYTES.with(|b| b.set(b.get() + size as u64));
        }
    });
}

#[global_allocator]
static A: Counting = Counting;

/// Serves `streams` requests on one connection; returns (allocations, bytes)
/// on the server thread.
fn serve(streams: usize) -> (u64, u64) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let client = std::thread::spawn(move || {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .unwrap();
        rt.block_on(async move {
            let s = monoio::net::TcpStream::connect(addr).await.unwrap();
            let io = s.try_into_poll_io().map_err(|(e, _)| e).unwrap();
            let (mut send, conn) = h2::client::handshake(io).await.unwrap();
            let driver = monoio::spawn(async move {
                let _ = conn.await;
            });
            for _ in 0..streams {
                let req = http::Request::get("http://a.test/small")
                    .header("user-agent", "h2load nghttp2/1.52.0")
                    .header("accept", "*/*")
                    .header("accept-encoding", "gzip, deflate")
                    .header("x-request-id", "0123456789abcdef")
                    .body(())
                    .unwrap();
                send = send.ready().await.unwrap();
                let (resp, _) = send.send_request(req, true).unwrap();
                let mut body = resp.await.unwrap().into_body();
                while let Some(d) = body.data().await {
                    let d = d.unwrap();
                    let _ = body.flow_control().release_capacity(d.len());
                }
            }
            drop(send);
            let _ = driver.await;
        });
    });
    let (sock, _) = l.accept().unwrap();
    sock.set_nonblocking(true).unwrap();
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()
        .unwrap();
    let counts = rt.block_on(async move {
        let s = monoio::net::TcpStream::from_std(sock).unwrap();
        let io = s.try_into_poll_io().map_err(|(e, _)| e).unwrap();
        ALLOCS.with(|a| a.set(0));
        BYTES.with(|b| b.set(0));
        ON.with(|on| on.set(true));
        let end = super::server::drive(
            io,
            Vec::new(),
            &Http2::default(),
            monoio::time::sleep(Duration::from_secs(30)),
            |_req, mut respond, token| {
                monoio::spawn(async move {
                    let _token = token;
                    // What the proxy forwards from a typical backend answer.
                    let resp = http::Response::builder()
                        .status(200)
                        .header("content-type", "text/plain")
                        .header("content-length", "13")
                        .header("server", "nginx/1.22.1")
                        .header("date", "Tue, 01 Dec 2026 15:00:00 GMT")
                        .header("etag", "\"6762a1b2-d\"")
                        .body(())
                        .unwrap();
                    if let Ok(mut tx) = respond.send_response(resp, false) {
                        let _ = tx.send_data(Bytes::from_static(b"hello world!\n"), true);
                    }
                });
            },
        )
        .await;
        ON.with(|on| on.set(false));
        assert!(matches!(end, super::server::End::Closed), "{end:?}");
        (ALLOCS.with(Cell::get), BYTES.with(Cell::get))
    });
    client.join().unwrap();
    counts
}

#[test]
fn allocations_per_stream() {
    let (a1, b1) = serve(1);
    let (a2, b2) = serve(201);
    let per = (a2.saturating_sub(a1)) as f64 / 200.0;
    let bytes = (b2.saturating_sub(b1)) as f64 / 200.0;
    println!("h2 server side per stream: {per:.1} allocations, {bytes:.0} bytes allocated (connection: {a1} allocations, {b1} bytes)");
    // A regression guard, far above what is measured (see the module doc).
    assert!(per < 60.0, "{per} allocations per stream");
}

fn fut_size4<A, B, C, D, F: std::future::Future>(_: impl FnOnce(A, B, C, D) -> F) -> usize {
    std::mem::size_of::<F>()
}

/// The task spawned per stream is moved into its allocation when spawned
/// (two copies of the whole future): its size is a per-stream cost.
/// Measured (debug build): 4,736 B (8,064 B before the h2c, upload and
/// chunked paths were boxed and the header spans moved to a worker
/// scratch). A bound with some slack, so a change that puts a large value
/// or a runtime `Sleep` (640 B) back into every stream's task shows here.
#[test]
fn stream_task_size() {
    let n = fut_size4(super::proxy::stream);
    println!(
        "h2 stream task future: {n} B; parts {:?}",
        super::proxy::debug_sizes()
    );
    assert!(n <= 5_120, "the h2 stream task grew to {n} B");
}
