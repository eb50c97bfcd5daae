//! TCP routes end to end, on both I/O drivers: bulk integrity (SHA-256) both
//! ways, half-close, concurrency, failover to the next backend, each balancer's
//! distribution, idle timeout, graceful shutdown with a transfer in flight.

mod support;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use support::*;

both_drivers!(
    bulk_256mib_each_way,
    half_close_keeps_other_direction,
    concurrent_200_connections,
    refused_backend_fails_over,
    round_robin_is_even,
    ip_hash_is_sticky,
    least_conn_prefers_idle,
    idle_timeout_closes_silent_tunnel,
    graceful_shutdown_lets_transfer_finish,
    small_messages_relay_without_pipes,
);

fn bulk_256mib_each_way(io: &str) {
    const MIB: u64 = 256;
    // The backend hashes what it receives and sends its own stream back, at the same time.
    let got_by_backend = std::sync::Arc::new(std::sync::Mutex::new(None));
    let g = got_by_backend.clone();
    let backend = Backend::spawn(move |c| {
        let mut w = c.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let h = send_stream(&mut w, 2, MIB).unwrap();
            w.shutdown(Shutdown::Write).unwrap();
            h
        });
        let mut r = c;
        let got = drain_hash(&mut r).unwrap();
        let sent = writer.join().unwrap();
        *g.lock().unwrap() = Some((got, sent));
    });
    let port = free_port();
    let _rm = Ringmesh::start(
        &tcp_config(port, &[backend.port], "round_robin", ""),
        io,
        &[port],
    );
    wait_until(Duration::from_secs(2), || {
        backend.open.load(std::sync::atomic::Ordering::SeqCst) == 0
    });
    *got_by_backend.lock().unwrap() = None;

    let c = connect(port);
    let mut w = c.try_clone().unwrap();
    let t0 = Instant::now();
    let writer = std::thread::spawn(move || {
        let h = send_stream(&mut w, 1, MIB).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
        h
    });
    let mut r = c;
    let (n, down_hash) = drain_hash(&mut r).unwrap();
    let up_hash = writer.join().unwrap();
    assert_eq!(n, MIB << 20, "bytes backend -> client");
    assert!(wait_until(Duration::from_secs(10), || got_by_backend
        .lock()
        .unwrap()
        .is_some()));
    let ((bn, backend_got), backend_sent) = got_by_backend.lock().unwrap().clone().unwrap();
    assert_eq!(bn, MIB << 20, "bytes client -> backend");
    assert_eq!(backend_got, up_hash, "client -> backend bytes differ");
    assert_eq!(backend_sent, down_hash, "backend -> client bytes differ");
    eprintln!("{io}: 2 x {MIB} MiB in {:?}", t0.elapsed());
}

fn half_close_keeps_other_direction(io: &str) {
    // The backend reads until EOF, then answers with the byte count, then closes.
    let backend = Backend::spawn(|mut c| {
        let mut total = 0usize;
        let mut buf = [0u8; 65536];
        loop {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => total += n,
                Err(_) => return,
            }
        }
        // The client has half-closed; our direction must still flow.
        std::thread::sleep(Duration::from_millis(200));
        for _ in 0..50 {
            c.write_all(&[b'x'; 1000]).unwrap();
        }
        c.write_all(format!("\ngot {total}\n").as_bytes()).unwrap();
    });
    let port = free_port();
    let _rm = Ringmesh::start(
        &tcp_config(port, &[backend.port], "round_robin", ""),
        io,
        &[port],
    );
    let mut c = connect(port);
    c.write_all(&vec![7u8; 300_000]).unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).unwrap();
    assert_eq!(reply.len(), 50_000 + "\ngot 300000\n".len());
    assert!(
        reply.ends_with(b"\ngot 300000\n"),
        "{:?}",
        String::from_utf8_lossy(&reply[reply.len() - 20..])
    );
}

fn concurrent_200_connections(io: &str) {
    let backend = Backend::echo();
    let port = free_port();
    let _rm = Ringmesh::start(
        &tcp_config(port, &[backend.port], "round_robin", ""),
        io,
        &[port],
    );
    let threads: Vec<_> = (0..200u64)
        .map(|i| {
            std::thread::spawn(move || {
                let c = connect(port);
                let mut w = c.try_clone().unwrap();
                let writer = std::thread::spawn(move || {
                    let h = send_stream(&mut w, 100 + i, 1).unwrap();
                    w.shutdown(Shutdown::Write).unwrap();
                    h
                });
                let mut r = c;
                let (n, got) = drain_hash(&mut r).unwrap();
                let sent = writer.join().unwrap();
                assert_eq!(n, 1 << 20);
                assert_eq!(got, sent, "connection {i} corrupted");
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a connection failed");
    }
}

fn refused_backend_fails_over(io: &str) {
    let good = Backend::tagged("good");
    let dead = free_port(); // nothing listens there
    let port = free_port();
    let _rm = Ringmesh::start(
        &tcp_config(port, &[dead, good.port], "round_robin", ""),
        io,
        &[port],
    );
    for i in 0..20 {
        let mut c = connect(port);
        assert_eq!(read_line(&mut c), "good", "connection {i}");
    }
}

fn tagged_backends(n: usize) -> Vec<Backend> {
    const TAGS: [&str; 4] = ["b0", "b1", "b2", "b3"];
    (0..n).map(|i| Backend::tagged(TAGS[i])).collect()
}

fn round_robin_is_even(io: &str) {
    let bs = tagged_backends(3);
    let ports: Vec<u16> = bs.iter().map(|b| b.port).collect();
    let port = free_port();
    let _rm = Ringmesh::start(&tcp_config(port, &ports, "round_robin", ""), io, &[port]);
    let before: Vec<usize> = bs.iter().map(Backend::accepted).collect();
    let mut counts = [0usize; 3];
    for _ in 0..300 {
        let mut c = connect(port);
        let tag = read_line(&mut c);
        counts[tag[1..].parse::<usize>().unwrap()] += 1;
    }
    for (i, c) in counts.iter().enumerate() {
        assert!(
            (90..=110).contains(c),
            "backend {i} got {c} of 300: {counts:?}"
        );
        assert_eq!(bs[i].accepted() - before[i], *c);
    }
}

fn ip_hash_is_sticky(io: &str) {
    let bs = tagged_backends(3);
    let ports: Vec<u16> = bs.iter().map(|b| b.port).collect();
    let port = free_port();
    let _rm = Ringmesh::start(&tcp_config(port, &ports, "ip_hash", ""), io, &[port]);
    let mut seen = std::collections::HashSet::new();
    for host in 1..=12u8 {
        let src = [127, 0, 0, host];
        let first = read_line(&mut connect_from(src, port));
        for _ in 0..5 {
            assert_eq!(
                read_line(&mut connect_from(src, port)),
                first,
                "client {src:?} moved"
            );
        }
        seen.insert(first);
    }
    assert!(
        seen.len() >= 2,
        "12 client addresses all hashed to one backend: {seen:?}"
    );
}

fn least_conn_prefers_idle(io: &str) {
    let bs = tagged_backends(2);
    let ports: Vec<u16> = bs.iter().map(|b| b.port).collect();
    let port = free_port();
    let _rm = Ringmesh::start(&tcp_config(port, &ports, "least_conn", ""), io, &[port]);
    // Hold connections open; each new one must go to the backend with fewer.
    let mut held = Vec::new();
    let mut counts = [0usize; 2];
    for i in 0..10 {
        let mut c = connect(port);
        let tag = read_line(&mut c);
        let b = tag[1..].parse::<usize>().unwrap();
        counts[b] += 1;
        held.push((b, c));
        assert!(
            counts[0].abs_diff(counts[1]) <= 1,
            "after {} connections: {counts:?}",
            i + 1
        );
    }
    // Close every connection held on b0: the next ones must all go to b0,
    // which now has none while b1 still has five.
    let (on_b0, on_b1): (Vec<_>, Vec<_>) = held.into_iter().partition(|(b, _)| *b == 0);
    drop(on_b0);
    assert!(wait_until(Duration::from_secs(5), || bs[0]
        .open
        .load(std::sync::atomic::Ordering::SeqCst)
        == 0));
    let mut again = Vec::new();
    for _ in 0..3 {
        let mut c = connect(port);
        assert_eq!(
            read_line(&mut c),
            "b0",
            "least_conn sent a connection to the busier backend"
        );
        again.push(c);
    }
    drop(on_b1);
}

fn idle_timeout_closes_silent_tunnel(io: &str) {
    let backend = Backend::echo();
    let port = free_port();
    let cfg = tcp_config(
        port,
        &[backend.port],
        "round_robin",
        r#", "timeouts": {"idle": "1s", "connect": "2s"}"#,
    );
    let _rm = Ringmesh::start(&cfg, io, &[port]);
    let mut c = connect(port);
    // Traffic keeps it alive past the timeout...
    let mut t0 = Instant::now();
    for _ in 0..4 {
        c.write_all(b"ping").unwrap();
        let mut b = [0u8; 4];
        c.read_exact(&mut b).unwrap();
        t0 = Instant::now();
        std::thread::sleep(Duration::from_millis(400));
    }
    // ...silence closes it, about 1 s after the last byte.
    let mut b = [0u8; 1];
    let n = c.read(&mut b).unwrap_or(0);
    let waited = t0.elapsed();
    assert_eq!(n, 0, "expected EOF from the idle timeout");
    assert!(
        waited >= Duration::from_millis(850) && waited < Duration::from_secs(3),
        "closed after {waited:?}"
    );
}

fn graceful_shutdown_lets_transfer_finish(io: &str) {
    // The backend trickles 40 x 64 KiB over ~2 s, then closes.
    let backend = Backend::spawn(|mut c| {
        let mut s = Stream::new(9);
        for i in 0..40u64 {
            if c.write_all(&s.chunk(i)[..65536]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let port = free_port();
    let mut rm = Ringmesh::start(
        &tcp_config(port, &[backend.port], "round_robin", ""),
        io,
        &[port],
    );
    let mut c = connect(port);
    let mut first = [0u8; 1024];
    c.read_exact(&mut first).unwrap();
    rm.signal(libc::SIGTERM);
    // Probe only after the workers have had time to stop: a worker left
    // with no connection of its own then ends at once, which once left its
    // io_uring listener open (its close never submitted) and clients queued
    // in a backlog nobody accepted.
    std::thread::sleep(Duration::from_millis(400));
    // New connections are refused once the listeners close (within a tick or two).
    assert!(
        wait_until(Duration::from_secs(2), || std::net::TcpStream::connect((
            "127.0.0.1",
            port
        ))
        .is_err()),
        "listener still accepting after SIGTERM"
    );
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert_eq!(
        1024 + rest.len(),
        40 * 65536,
        "transfer cut short by shutdown"
    );
    // The backend closed its side; the client closes its own, ending the tunnel.
    drop(c);
    let st = rm
        .wait_exit(Duration::from_secs(10))
        .expect("ringmesh did not exit after the transfer");
    assert!(st.success(), "exit status {st:?}; log:\n{}", rm.logs());
}

/// Pipes (each two fds) held by ringmesh: its fds that are pipes.
fn pipe_fds(rm: &Ringmesh) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", rm.pid()))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|t| t.to_string_lossy().starts_with("pipe:"))
        .count()
}

/// Round trips of `sizes` bytes each through `c` (an echo), checked byte for byte.
fn echo_round_trips(c: &mut std::net::TcpStream, seed: u8, sizes: impl Iterator<Item = usize>) {
    for (i, n) in sizes.enumerate() {
        let msg: Vec<u8> = (0..n)
            .map(|j| (j as u8).wrapping_mul(31) ^ seed ^ i as u8)
            .collect();
        c.write_all(&msg).unwrap();
        let mut got = vec![0u8; n];
        c.read_exact(&mut got).unwrap();
        assert!(got == msg, "round trip {i} ({n} bytes) corrupted");
    }
}

/// Small messages go through a pooled buffer (recv + send), never a pipe;
/// a stream that fills the buffer switches to splice, and small messages
/// after it still arrive intact and in order.
fn small_messages_relay_without_pipes(io: &str) {
    let backend = Backend::echo();
    let port = free_port();
    let _rm = Ringmesh::start(
        &tcp_config(port, &[backend.port], "round_robin", ""),
        io,
        &[port],
    );
    let rm = &_rm;
    let pipes_before = pipe_fds(rm);
    // 50 tunnels, each 40 request/response exchanges of 1 B to 8 KiB.
    let mut conns: Vec<_> = (0..50u8)
        .map(|k| {
            let mut c = connect(port);
            c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
            echo_round_trips(
                &mut c,
                k,
                (0..40).map(|i| 1 + (i * 211 + k as usize * 7) % 8192),
            );
            c
        })
        .collect();
    assert_eq!(
        pipe_fds(rm),
        pipes_before,
        "small messages must not take pipes"
    );
    // A stream: 8 MiB written while the echo flows back (splice territory).
    let mut c = conns.pop().unwrap();
    let mut w = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        let mut s = Stream::new(9);
        for i in 0..8u64 {
            w.write_all(s.chunk(i)).unwrap();
        }
    });
    let mut expect = Stream::new(9);
    for i in 0..8u64 {
        let want = expect.chunk(i).to_vec();
        let mut got = vec![0u8; want.len()];
        c.read_exact(&mut got).unwrap();
        assert!(got == want, "streamed MiB {i} corrupted");
    }
    writer.join().unwrap();
    // Back to small messages on the same tunnel and on the others.
    echo_round_trips(&mut c, 99, (0..200).map(|i| 1 + (i * 37) % 3000));
    for (k, c) in conns.iter_mut().enumerate() {
        echo_round_trips(c, k as u8, (0..5).map(|i| 100 + i * 1000));
    }
    // Idle tunnels hold no pipe: whatever the stream borrowed is back in
    // the worker's pool (bounded), not held by 50 connections.
    let held = pipe_fds(rm);
    assert!(
        held <= pipes_before + 2 * 2,
        "{held} pipe fds with idle tunnels (before: {pipes_before})"
    );
}
