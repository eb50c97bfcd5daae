//! Size bounds of a session's task (see `session_task_size`).

use std::future::Future;

fn fut_size2<A, B, F: Future>(_: impl FnOnce(A, B) -> F) -> usize {
    std::mem::size_of::<F>()
}
fn fut_size3<A, B, C, F: Future>(_: impl FnOnce(A, B, C) -> F) -> usize {
    std::mem::size_of::<F>()
}
fn fut_size4<A, B, C, D, F: Future>(_: impl FnOnce(A, B, C, D) -> F) -> usize {
    std::mem::size_of::<F>()
}

/// An idle session is its boxed `run` future (apart from the request's,
/// see `http::upgrade::SessionStart`), the [`super::Session`] record and
/// the connection's small task: bounds with some slack, so a change that
/// inlines a rare wait (a full socket, the close, a splice) shows here.
#[test]
fn session_task_size() {
    let run = fut_size3(super::run);
    let send = fut_size4(super::super::ClientIo::send_all);
    let recv = fut_size3(super::super::ClientIo::recv);
    let session = std::mem::size_of::<super::Session>();
    eprintln!(
        "session::run {run} B (drive {} B: up {} B, down {} B, watch {} B; send_all {send} B, \
         recv {recv} B, readable {} B, close {} B); Session {session} B",
        fut_size3(super::Drive::drive),
        fut_size2(super::Drive::up),
        fut_size2(super::Drive::down),
        fut_size1(super::Drive::watch),
        fut_size2(monoio::net::TcpStream::readable),
        fut_size3(super::super::ClientIo::close),
    );
    // Measured (debug build): run 1304 B (1784 B while `run` was an async
    // fn keeping its arguments and the down future held a flush inline;
    // 2368 B before the full-socket wait and the close were boxed),
    // send_all 72 B, recv 160 B, Session 440 B.
    assert!(run <= 1400, "session future grew to {run} B");
    assert!(send <= 96, "send_all future grew to {send} B");
    assert!(session <= 448, "Session grew to {session} B");
    let down = fut_size2(super::Drive::down);
    assert!(
        down <= 480,
        "the down future grew to {down} B (a flush inline?)"
    );
}

fn fut_size1<A, F: Future>(_: impl FnOnce(A) -> F) -> usize {
    std::mem::size_of::<F>()
}
