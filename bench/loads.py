"""Load generators (wrk, iperf3) and their output parsers, plus a small HTTP probe.

The parsers are pure functions of the tool's text, so they can be checked on saved output:
`python3 bench/loads.py --selftest`.
"""

import json
import re
import socket
import sys
import time

from procs import BenchError

_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def parse_wrk(text):
    """Figures from `wrk --latency` output: requests, req/s, p50/p99 (ms), socket errors."""
    out = {}
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(\w+)", text, re.M)
    if not m:
        raise BenchError("wrk output has no 'requests in' line: " + text.strip()[-300:])
    out["requests"] = int(m.group(1))
    m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    out["rps"] = float(m.group(1)) if m else None
    dist = text.split("Latency Distribution", 1)
    if len(dist) == 2:
        for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
            m = re.search(rf"^\s*{pct}(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", dist[1], re.M)
            if m:
                out[key] = float(m.group(1)) * _TIME_UNITS_MS[m.group(2)]
    errors = {}
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        for k, v in zip(("connect", "read", "write", "timeout"), m.groups()):
            if int(v):
                errors[k] = int(v)
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    if m and int(m.group(1)):
        errors["non2xx"] = int(m.group(1))
    out["errors"] = errors
    return out


def wrk_argv(port, path, close, duration, conns, threads):
    argv = ["wrk", "-t", str(threads), "-c", str(max(conns, threads)), "-d", f"{duration}s",
            "--latency", "--timeout", "5s"]
    if close:
        argv += ["-H", "Connection: close"]
    return argv + [f"http://127.0.0.1:{port}{path}"]


def parse_h2load(text):
    """Figures from `h2load` output: requests (succeeded), req/s, errors (failed, non-2xx)."""
    out = {}
    m = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", text, re.M)
    if not m:
        raise BenchError("h2load output has no 'requests:' line: " + text.strip()[-300:])
    out["requests"] = int(m.group(4))
    m2 = re.search(r"^finished in ([\d.]+)s, ([\d.]+) req/s", text, re.M)
    out["rps"] = float(m2.group(2)) if m2 else None
    m3 = re.search(r"^time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", text, re.M)
    if m3:
        # h2load prints no percentiles without a log file: the mean stands in for p50.
        out["p50_ms"] = float(m3.group(1)) * _TIME_UNITS_MS[m3.group(2)]
    errors = {}
    for k, i in (("failed", 5), ("errored", 6), ("timeout", 7)):
        if int(m.group(i)):
            errors[k] = int(m.group(i))
    m4 = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text, re.M)
    if m4 and int(m4.group(3)) + int(m4.group(4)):
        errors["non2xx"] = int(m4.group(3)) + int(m4.group(4))
    out["errors"] = errors
    return out


def h2load_argv(port, path, duration, conns, streams, threads):
    """h2load with prior knowledge: `conns` connections x `streams` concurrent streams."""
    threads = max(1, min(threads, conns))
    return ["h2load", "-D", str(duration), "-c", str(conns), "-m", str(streams),
            "-t", str(threads), f"http://127.0.0.1:{port}{path}"]


def parse_iperf3(text):
    """Figures from `iperf3 -J`: bytes and bit/s as received (what went through the proxy)."""
    try:
        j = json.loads(text)
    except ValueError:
        raise BenchError("iperf3 output is not JSON: " + text.strip()[-300:])
    if j.get("error"):
        raise BenchError("iperf3: " + str(j["error"]))
    try:
        recv = j["end"]["sum_received"]
        sent = j["end"].get("sum_sent", {})
        return {"bytes": int(recv["bytes"]), "gbps": recv["bits_per_second"] / 1e9,
                "seconds": recv.get("seconds"), "retransmits": sent.get("retransmits")}
    except (KeyError, TypeError):
        raise BenchError("iperf3 JSON lacks end.sum_received")


def iperf3_argv(port, reverse, duration):
    argv = ["iperf3", "-c", "127.0.0.1", "-p", str(port), "-t", str(duration), "-J",
            "--connect-timeout", "3000"]
    return argv + (["-R"] if reverse else [])


# ---------------------------------------------------------------------------------------------
# HTTP probe: checks a candidate really proxies before it is measured.

class _Reader:
    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _more(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError
        self.buf += chunk

    def until(self, sep):
        while sep not in self.buf:
            self._more()
        head, self.buf = self.buf.split(sep, 1)
        return head

    def exactly(self, n):
        while len(self.buf) < n:
            self._more()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data


def http_get(sock, reader, path, close=False):
    """One HTTP/1.1 GET on an open socket; returns (status, headers, body)."""
    req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: ringmesh-bench\r\n"
    if close:
        req += "Connection: close\r\n"
    sock.sendall((req + "\r\n").encode())
    head = reader.until(b"\r\n\r\n").decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {}
    for line in head[1:]:
        k, _, v = line.partition(":")
        headers[k.strip().lower()] = v.strip()
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while True:
            size = int(reader.until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                reader.until(b"\r\n")
                break
            body += reader.exactly(size)
            reader.exactly(2)
    elif "content-length" in headers:
        body = reader.exactly(int(headers["content-length"]))
    else:
        body = reader.buf
        try:
            while True:
                reader._more()
                body = reader.buf
        except EOFError:
            pass
    return status, headers, body


def probe_http(port, small, big, timeout=5.0):
    """Check /small and /64k on one keep-alive connection, then that 'Connection: close' closes.

    Returns (error or None, warnings list).
    """
    warnings = []
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            r = _Reader(s)
            for path, want in (("/small", small), ("/64k", big), ("/small", small)):
                status, _, body = http_get(s, r, path)
                if status != 200 or body != want:
                    return (f"GET {path}: status {status}, {len(body)} body bytes "
                            f"(want 200, {len(want)})"), warnings
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            r = _Reader(s)
            status, headers, body = http_get(s, r, "/small", close=True)
            if status != 200 or body != small:
                return f"GET /small with Connection: close: status {status}", warnings
            s.settimeout(2.0)
            try:
                if s.recv(1) != b"":
                    warnings.append("sent bytes after a Connection: close response")
            except socket.timeout:
                warnings.append("kept the connection open after 'Connection: close' "
                                "(http-newconn would measure keep-alive)")
            if "close" not in headers.get("connection", "").lower():
                warnings.append("no 'Connection: close' in the response")
    except (OSError, EOFError, ValueError, IndexError) as e:
        return f"HTTP probe on port {port} failed: {e!r}", warnings
    return None, warnings


def listening(port):
    """Number of sockets listening on 127.0.0.1:port or 0.0.0.0:port (from /proc/net/tcp).

    Read from /proc rather than by connecting: a test connection to a TCP proxy would reach the
    iperf3 server behind it, which takes it for a client and then refuses the real one.
    """
    n = 0
    want = {f"0100007F:{port:04X}", f"00000000:{port:04X}"}
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[1] in want and parts[3] == "0A":
                    n += 1
    except OSError:
        pass
    return n


def wait_port(port, timeout, alive=lambda: True):
    """Wait until something listens on 127.0.0.1:port; False on timeout or death."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return False
        if listening(port):
            return True
        time.sleep(0.05)
    return False


def port_free(port):
    """True if nothing listens on 127.0.0.1:port (a bind test, no SO_REUSEPORT)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


_WRK_SAMPLE = """Running 3s test @ http://127.0.0.1:18000/small
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   489.72us  161.01us   6.02ms   92.39%
    Req/Sec    66.11k     2.73k   69.29k    83.33%
  Latency Distribution
     50%  456.00us
     75%  512.00us
     90%  602.00us
     99%    1.23ms
  197292 requests in 3.00s, 47.22MB read
  Socket errors: connect 0, read 12, write 0, timeout 0
  Non-2xx or 3xx responses: 3
Requests/sec:  65763.21
Transfer/sec:     15.74MB
"""


def _selftest():
    w = parse_wrk(_WRK_SAMPLE)
    assert w["requests"] == 197292 and abs(w["rps"] - 65763.21) < 1e-6, w
    assert abs(w["p50_ms"] - 0.456) < 1e-9 and abs(w["p99_ms"] - 1.23) < 1e-9, w
    assert w["errors"] == {"read": 12, "non2xx": 3}, w
    j = json.dumps({"end": {"sum_sent": {"bytes": 10, "retransmits": 0},
                            "sum_received": {"bytes": 2_000_000_000, "bits_per_second": 16e9,
                                             "seconds": 1.0}}})
    i = parse_iperf3(j)
    assert i["bytes"] == 2_000_000_000 and i["gbps"] == 16.0, i
    try:
        parse_iperf3(json.dumps({"error": "unable to connect"}))
        raise AssertionError("error not raised")
    except BenchError:
        pass
    print("loads.py selftest: 2 passed, 0 failed")


if __name__ == "__main__":
    if sys.argv[1:] == ["--selftest"]:
        _selftest()
