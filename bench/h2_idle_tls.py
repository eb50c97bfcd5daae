#!/usr/bin/env python3
"""How much an idle HTTP/2 connection over TLS costs the proxy.

Opens N TLS connections to 127.0.0.1:PORT offering ALPN h2 only; on each,
sends the client preface, one GET stream (frames written by hand: a static
HPACK table block, no dependency) for --path, reads its answer (a body of
a few dozen KiB fills the TLS record buffers, as traffic does), and leaves the
connection idle. Reads the proxy's VmRSS (--pid) before and after and
prints the growth per connection. Bounded in time; closes everything at
the end. Loopback only.

  python3 bench/h2_idle_tls.py PORT COUNT --pid PID --cafile ca.pem --host a.example.com
"""

import argparse
import resource
import socket
import ssl
import struct
import sys
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def frame(kind, flags, stream, payload=b""):
    n = len(payload)
    return struct.pack(">BHBBI", n >> 16, n & 0xFFFF, kind, flags, stream) + payload


def one_stream(t, host, path, deadline):
    # :method GET, :scheme https, :path (static index 4, or a literal), :authority.
    p = b"\x84" if path == "/" else b"\x44" + bytes([len(path)]) + path.encode()
    block = b"\x82\x87" + p + b"\x41" + bytes([len(host)]) + host.encode()
    t.sendall(
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        + frame(4, 0, 0, struct.pack(">HI", 4, 1 << 20))  # SETTINGS: window 1 MiB
        + frame(8, 0, 0, struct.pack(">I", 1 << 20))  # WINDOW_UPDATE (connection)
        + frame(1, 0x5, 1, block)  # HEADERS, END_STREAM | END_HEADERS
    )
    buf = b""
    while time.monotonic() < deadline:
        chunk = t.recv(65536)
        if not chunk:
            raise EOFError("closed")
        buf += chunk
        while len(buf) >= 9:
            n = (buf[0] << 16) | (buf[1] << 8) | buf[2]
            if len(buf) < 9 + n:
                break
            kind, flags = buf[3], buf[4]
            stream = struct.unpack(">I", buf[5:9])[0] & 0x7FFFFFFF
            buf = buf[9 + n :]
            if kind == 4 and not flags & 1:
                t.sendall(frame(4, 1, 0))  # SETTINGS ACK
            if stream == 1 and kind in (0, 1) and flags & 1:
                return
            if kind == 7:
                raise EOFError("GOAWAY")
    raise TimeoutError("no answer")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("count", type=int)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--cafile", required=True)
    ap.add_argument("--host", default="a.example.com")
    ap.add_argument("--path", default="/", help="what the one stream GETs (a large body fills the record buffers)")
    ap.add_argument("--settle", type=float, default=2.0)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < a.count + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, a.count + 64), hard))
    ctx = ssl.create_default_context(cafile=a.cafile)
    ctx.set_alpn_protocols(["h2"])
    before = rss_kib(a.pid)
    conns, failed = [], 0
    deadline = time.monotonic() + 120
    for _ in range(a.count):
        try:
            s = socket.create_connection(("127.0.0.1", a.port), timeout=20)
            t = ctx.wrap_socket(s, server_hostname=a.host)
            if t.selected_alpn_protocol() != "h2":
                raise ValueError("ALPN did not choose h2")
            one_stream(t, a.host, a.path, deadline)
            conns.append(t)
        except Exception as e:  # counted, reported
            failed += 1
            if failed == 1:
                print("first failure:", e, file=sys.stderr)
        if time.monotonic() > deadline:
            break
    time.sleep(a.settle)
    after = rss_kib(a.pid)
    n = max(len(conns), 1)
    print(
        f"idle h2 TLS connections={len(conns)} failed={failed} "
        f"rss_before_kib={before} rss_after_kib={after} "
        f"per_connection_kib={(after - before) / n:.1f}"
    )
    for t in conns:
        t.close()


if __name__ == "__main__":
    main()
