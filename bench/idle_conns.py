#!/usr/bin/env python3
"""Open N client connections to 127.0.0.1:PORT and keep them open, idle.

With --request PATH each connection first does one keep-alive HTTP/1.1 GET and reads the whole
response, so an HTTP proxy holds the state of a served keep-alive connection (and a TCP proxy its
upstream connection); with --request '' the connections are only opened.

Prints "READY ok=<n> failed=<m> seconds=<s>" once all are open, then waits until stdin is closed
(or --hold seconds pass), closes them all and exits. Bounded in time throughout.
"""

import argparse
import resource
import select
import socket
import ssl
import sys
import time


def one_request(sock, path):
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("closed before the response head")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("closed inside the body")
        body += chunk
    if not head.startswith(b"HTTP/1.1 200") and not head.startswith(b"HTTP/1.0 200"):
        raise ValueError(head.split(b"\r\n")[0].decode("latin-1"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("count", type=int)
    ap.add_argument("--request", default="/small")
    ap.add_argument("--hold", type=float, default=120.0, help="longest time to hold them")
    ap.add_argument("--open-timeout", type=float, default=60.0)
    ap.add_argument("--tls", action="store_true",
                    help="TLS (no certificate check: the bench's own CA) before the request")
    a = ap.parse_args()
    ctx = None
    if a.tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        # HTTP/1.1 keep-alive, the state the bench measures (not h2).
        ctx.set_alpn_protocols(["http/1.1"])

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, a.count + 64) if hard != resource.RLIM_INFINITY else a.count + 64
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    socks, failed, first_error = [], 0, None
    start = time.monotonic()
    deadline = start + a.open_timeout
    for _ in range(a.count):
        if time.monotonic() > deadline:
            failed += a.count - len(socks) - failed
            first_error = first_error or "open timeout"
            break
        s = None
        try:
            s = socket.create_connection(("127.0.0.1", a.port), timeout=5)
            if ctx is not None:
                s = ctx.wrap_socket(s, server_hostname="localhost")
            if a.request:
                one_request(s, a.request)
            socks.append(s)
        except (OSError, EOFError, ValueError, ssl.SSLError) as e:
            failed += 1
            first_error = first_error or repr(e)
            if s is not None:
                s.close()
    took = time.monotonic() - start
    print(f"READY ok={len(socks)} failed={failed} seconds={took:.2f}"
          + (f" first_error={first_error}" if first_error else ""), flush=True)

    # Hold until the parent closes our stdin (or the hold time ends).
    end = time.monotonic() + a.hold
    while time.monotonic() < end:
        r, _, _ = select.select([sys.stdin], [], [], max(0.0, min(1.0, end - time.monotonic())))
        if r and not sys.stdin.buffer.read1(4096):
            break
    for s in socks:
        s.close()
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
