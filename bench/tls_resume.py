#!/usr/bin/env python3
"""Reconnect N times to 127.0.0.1:PORT over TLS, each time offering the session
the previous connection received, and count how many were resumed.

Each connection sends one HTTP/1.1 GET (Connection: close) and reads the
answer, so TLS 1.3 session tickets (sent after the handshake) have arrived
before the session is taken for the next connection. With several proxy
workers, reconnects land on any of them: a ratio near 100% shows the ticket
keys (or the session cache) are shared.

Prints "RESUME offered=<n> resumed=<m> ratio=<r> failed=<f>". Bounded: every
socket has a timeout and the whole run stops after --limit seconds.
"""

import argparse
import socket
import ssl
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--limit", type=float, default=60.0)
    ap.add_argument("--tls12", action="store_true", help="TLS 1.2 instead of 1.3")
    a = ap.parse_args()

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    if a.tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2

    session = None
    offered = resumed = failed = 0
    end = time.monotonic() + a.limit
    for _ in range(a.count):
        if time.monotonic() > end:
            break
        try:
            raw = socket.create_connection(("127.0.0.1", a.port), timeout=5)
            s = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
            if session is not None:
                offered += 1
                resumed += bool(s.session_reused)
            s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            while s.recv(65536):
                pass
            session = s.session
            s.close()
        except (OSError, ssl.SSLError):
            failed += 1
    ratio = resumed / offered if offered else 0.0
    print(f"RESUME offered={offered} resumed={resumed} ratio={ratio:.3f} failed={failed}", flush=True)


if __name__ == "__main__":
    main()
