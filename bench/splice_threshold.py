#!/usr/bin/env python3
"""Where splice(2) starts to beat read+send for one frame payload (issue 11).

Moves `size`-byte payloads from one loopback TCP connection to another, the
way a gateway session forwards a frame's payload: either recv into a buffer
and send it (two syscalls, two user-space copies), or splice socket -> pipe ->
socket (two syscalls, no user-space copy, plus a pipe). Prints CPU time per
payload of this process (user+sys, CLOCK_PROCESS_CPUTIME_ID) for each size. Python adds the same
per-call overhead to both ways, so the crossover is what to read, not the
absolute numbers. The machine may be shared: noisy.

  python3 bench/splice_threshold.py [--reps 2000]
"""
import argparse
import os
import socket
import time


def pair():
    l = socket.socket()
    l.bind(("127.0.0.1", 0))
    l.listen(1)
    a = socket.create_connection(l.getsockname())
    b, _ = l.accept()
    l.close()
    return a, b


def run(size, reps, use_splice):
    src_w, src_r = pair()   # producer -> relay
    dst_w, dst_r = pair()   # relay -> consumer
    for s in (src_w, src_r, dst_w, dst_r):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    payload = b"p" * size
    pr, pw = os.pipe()
    try:
        import fcntl
        fcntl.fcntl(pw, 1031, 1 << 20)  # F_SETPIPE_SZ
    except OSError:
        pass
    buf = bytearray(max(size, 1))
    total_cpu = 0.0
    for _ in range(reps):
        src_w.sendall(payload)
        c0 = time.process_time()
        moved = 0
        while moved < size:
            if use_splice:
                n = os.splice(src_r.fileno(), pw, size - moved)
                k = 0
                while k < n:
                    k += os.splice(pr, dst_w.fileno(), n - k)
            else:
                n = src_r.recv_into(memoryview(buf)[: size - moved])
                dst_w.sendall(memoryview(buf)[:n])
            moved += n
        total_cpu += time.process_time() - c0
        got = 0
        while got < size:
            got += len(dst_r.recv(size - got))
    for s in (src_w, src_r, dst_w, dst_r):
        s.close()
    os.close(pr)
    os.close(pw)
    return total_cpu / reps * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=2000)
    a = ap.parse_args()
    print(f"{'size':>8}  {'read+send us':>12}  {'splice us':>10}  ratio")
    for size in (1024, 4096, 16384, 32768, 65536, 131072, 262144, 1048576):
        reps = max(50, a.reps * 4096 // max(size, 4096))
        c = run(size, reps, False)
        s = run(size, reps, True)
        print(f"{size:>8}  {c:>12.1f}  {s:>10.1f}  {s / c:.2f}")


if __name__ == "__main__":
    main()
