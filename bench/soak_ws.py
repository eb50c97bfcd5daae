#!/usr/bin/env python3
"""The soak's WebSocket-style backend: answers an Upgrade request with 101, then echoes.

Usage: soak_ws.py PORT. Listens on 127.0.0.1:PORT. A request with an `Upgrade:` header gets
`101 Switching Protocols` and then every byte it sends is echoed until it closes (no WebSocket
framing: the proxy only sees an upgraded tunnel either way). Any other request gets 400 and a
close. One thread per connection; each connection ends on EOF, an error or 5 minutes of silence.
"""

import socket
import sys
import threading


def serve(c):
    try:
        c.settimeout(300)
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = c.recv(65536)
            if not d:
                return
            buf += d
            if len(buf) > 65536:
                return
        head, rest = buf.split(b"\r\n\r\n", 1)
        if b"\nupgrade:" not in head.lower():
            c.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  b"Connection: Upgrade\r\n\r\n")
        if rest:
            c.sendall(rest)
        while True:
            d = c.recv(65536)
            if not d:
                return
            c.sendall(d)
    except OSError:
        pass
    finally:
        c.close()


def main():
    port = int(sys.argv[1])
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1024)
    print(f"soak_ws listening on 127.0.0.1:{port}", flush=True)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c,), daemon=True).start()


if __name__ == "__main__":
    main()
