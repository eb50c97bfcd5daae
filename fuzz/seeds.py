#!/usr/bin/env python3
"""Regenerates the committed seed corpus in fuzz/corpus/<target>/.

Seeds come from the project's own test payloads (byte-string literals in
src/http/head/tests.rs, src/http/rewrite/tests.rs, src/http/chunked.rs,
tests/http.rs), the example configs (config.example.json,
tests/fixtures/gophermesh.json, src/config/tests.rs) and a few hand-made
inputs for the structured targets. Files are named by their SHA-1, as
libFuzzer names corpus entries. Run from anywhere: python3 fuzz/seeds.py
"""
import hashlib
import os
import random
import re
import shutil
import ssl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "fuzz", "corpus")


def read(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as f:
        return f.read()


def unescape(body):
    """Rust string-literal escapes to bytes."""
    out = bytearray()
    i = 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            out += c.encode()
            i += 1
            continue
        n = body[i + 1]
        i += 2
        if n == "\n":  # line continuation: skip following whitespace
            while i < len(body) and body[i] in " \t\n":
                i += 1
        elif n == "x":
            out.append(int(body[i:i + 2], 16))
            i += 2
        elif n == "u":
            end = body.index("}", i)
            out += chr(int(body[i + 1:end], 16)).encode()
            i = end + 1
        else:
            out += {"r": b"\r", "n": b"\n", "t": b"\t", "0": b"\0", "\\": b"\\",
                    '"': b'"', "'": b"'"}[n]
    return bytes(out)


LIT = re.compile(r'b?"((?:[^"\\]|\\.|\\\n)*)"', re.S)


def literals(rel):
    return [unescape(m.group(1)) for m in LIT.finditer(read(rel))]


REQ = re.compile(rb"^[!-~]+ [^\r\n]* HTTP/")


def main():
    sources = ["src/http/head/tests.rs", "src/http/rewrite/tests.rs", "tests/http.rs",
               "src/http/chunked.rs"]
    lits = [l for s in sources for l in literals(s)]
    requests = {l for l in lits if REQ.match(l)}
    responses = {l for l in lits if l.lstrip(b"\r\n").startswith(b"HTTP/1.")}
    requests |= {
        b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET http://example.com:8080/p?q HTTP/1.1\r\nHost: x\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        b"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, X-Hop\r\nUpgrade: websocket\r\nX-Hop: 1\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
        b"GET / HTTP/1.0\r\n\r\n",
    }
    responses |= {
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"HTTP/1.0 200 OK\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
    }

    # Chunked bodies: literals from the scanner's tests and the bodies after
    # heads that declare chunked framing.
    bodies = {l for l in literals("src/http/chunked.rs") if not REQ.match(l)}
    for r in requests | responses:
        if b"chunked" in r.lower() and b"\r\n\r\n" in r:
            bodies.add(r.split(b"\r\n\r\n", 1)[1])
    bodies = {b for b in bodies if b}
    rng = random.Random(6)
    chunked = set()
    for b in bodies:
        cuts = bytes(rng.randrange(256) for _ in range(len(b) // 2))
        seed = bytes([0]) + cuts + b
        assert len(seed[1:]) // 3 == len(cuts), (len(seed), len(cuts))
        chunked.add(seed)
    for _ in range(16):
        chunked.add(bytes([1]) + bytes(rng.randrange(256) for _ in range(rng.randrange(4, 48))))

    configs = {read("config.example.json").encode(), read("tests/fixtures/gophermesh.json").encode()}
    mod = read("src/config/mod.rs")
    configs.add(re.search(r'DEFAULT_CONFIG: &str = r#"(.*?)"#', mod, re.S).group(1).encode())
    for m in re.finditer(r'r#"(.*?)"#', read("src/config/tests.rs"), re.S):
        if m.group(1).lstrip().startswith("{"):
            configs.add(m.group(1).encode())
    mutate = {bytes([i % 2]) + bytes(rng.randrange(256) for _ in range(rng.randrange(3, 40)))
              for i in range(24)}

    # PROXY headers: mode byte 0 (raw, no cuts) + v1/v2 headers with stream
    # bytes after them; odd mode bytes seed the round trip.
    v2 = b"\r\n\r\n\0\r\nQUIT\n"
    proxy = {b"\0" + h for h in [
        b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nGET / HTTP/1.1\r\n\r\n",
        b"PROXY TCP6 2001:db8::1 2001:db8::2 1 65535\r\n",
        b"PROXY UNKNOWN\r\n",
        b"PROXY UNKNOWN ffff:: ffff:: 1 2\r\n",
        v2 + b"\x21\x11\x00\x0c" + bytes([192, 0, 2, 7, 198, 51, 100, 1, 0x1f, 0x90, 0, 80]) + b"data",
        v2 + b"\x21\x21\x00\x24" + bytes(range(32)) + b"\x00\x01\x00\x02",
        v2 + b"\x20\x00\x00\x00",
        v2 + b"\x21\x11\x00\x10" + bytes(12) + b"\x04\x00\x01\x00",
        b"GET / HTTP/1.1\r\n\r\n",
    ]} | {bytes([2 * i + 1]) + bytes(rng.randrange(256) for _ in range(40)) for i in range(8)}
    # ClientHellos: real ones from Python's OpenSSL (with and without SNI,
    # TLS 1.2 only), whole and re-framed into small records.
    hellos = set()
    for sni, tls12 in [("db.example.com", False), (None, False), ("a.b.example.net", True)]:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if tls12:
            ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        obj = ctx.wrap_bio(inc, out, server_hostname=sni)
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            pass
        h = out.read()
        hellos.add(b"\0" + h)
        msg = h[5:]
        hellos.add(b"\0" + b"".join(b"\x16\x03\x01" + len(msg[i:i + 50]).to_bytes(2, "big") + msg[i:i + 50]
                                     for i in range(0, len(msg), 50)))
    hellos |= {bytes([2 * i + 1]) + bytes(rng.randrange(256) for _ in range(24)) for i in range(8)}

    sets = {"http_request": requests, "http_response": responses, "chunked": chunked,
            "config_json": configs, "config_mutate": mutate,
            "proxy_header": proxy, "client_hello": hellos}
    for target, seeds in sets.items():
        d = os.path.join(CORPUS, target)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for s in seeds:
            with open(os.path.join(d, hashlib.sha1(s).hexdigest()), "wb") as f:
                f.write(s)
        print(f"{target}: {len(seeds)} seeds")


if __name__ == "__main__":
    main()
