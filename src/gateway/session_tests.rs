//! Size bounds of a session's task (see `session_task_size`).

use std::future::Future;

fn fut_size3<A, B, C, F: Future>(_: impl FnOnce(A, B, C) -> F) -> usize {
    std::mem::size_of::<F>()
}
fn fut_size4<A, B, C, D, F: Future>(_: impl FnOnce(A, B, C, D) -> F) -> usize {
    std::mem::size_of::<F>()
}

/// An idle session is its boxed `run` future (apart from the request's,
/// see `http::upgrade::SessionStart`), the [`super::Session`] record and
/// the connection's small task: bounds with some slack, so a change that
/// keeps a direction's work (a read, a send, a flush, a splice, the close)
/// inline in the idle future shows here.
#[test]
fn session_task_size() {
    let run = fut_size3(super::run);
    let send = fut_size4(super::super::ClientIo::send_all);
    let session = std::mem::size_of::<super::Session>();
    let up = fut_size4(super::Drive::up);
    let down = fut_size4(super::Drive::down);
    eprintln!(
        "session::run {run} B (drive {} B; boxed while busy: up {up} B, down {down} B; \
         send_all {send} B, readable {} B, close {} B, FrameReader {} B); Session {session} B",
        fut_size1(super::Drive::drive),
        fut_size1(super::super::idle::readable),
        fut_size3(super::super::ClientIo::close),
        std::mem::size_of::<super::super::frame::FrameReader>(),
    );
    // Measured (debug build): run 608 B with the hand-written `Idle`
    // future (1304 B while three async loops, up, down and watch, ran under
    // a `select!`; 1784 B while `run` was an async fn keeping its
    // arguments; 2368 B before the full-socket wait and the close were
    // boxed), send_all 72 B, Session 368 B (440 B with its id string, the
    // close inline and `RefCell` wakers). The record lives in an `Rc`
    // (16 B more): 384 B is a mimalloc size class, 385 B would take 448.
    // Branch gate5: run 456 B (608 before) with the idle directions'
    // frame readers parked (`frame::Parked`, 16 B each at a frame boundary
    // instead of 88 B), which makes the session's box
    // (`http::upgrade::session`, with the upstream handle) 624 B, in
    // mimalloc's 640 B class (768 B before); a few bytes more and it takes
    // the 768 B class again. Session 240 B (368 before): the client address
    // as a `Peer` (16 B, not 32), the user as a `Box<str>`, the channels as
    // a `Channels` slice (not a `BTreeSet`, whose first node was 288 B
    // more), the push queue (with its byte count) and the settings boxed
    // only while there are some, the send queue's limit read from the
    // route, one waker for both wake-ups, the close's time in its box, a
    // tcp session's fds in two `RawFd`s: with the `Rc`'s 16 B, the 256 B
    // class (384 B before). One byte more is the 320 B class.
    assert!(run <= 456, "session future grew to {run} B");
    assert!(send <= 96, "send_all future grew to {send} B");
    assert!(session <= 240, "Session grew to {session} B");
    let boxed = crate::http::conn::debug_sizes()
        .into_iter()
        .find(|(name, _)| *name == "session")
        .map(|(_, n)| n)
        .unwrap();
    eprintln!("the session's box (http::upgrade::session) {boxed} B");
    assert!(boxed <= 640, "the session's box grew to {boxed} B");
    assert_eq!(
        std::mem::size_of::<Option<super::super::frame::Parked>>(),
        16,
        "a parked frame reader"
    );
}

fn fut_size1<A, F: Future>(_: impl FnOnce(A) -> F) -> usize {
    std::mem::size_of::<F>()
}
