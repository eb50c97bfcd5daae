#!/usr/bin/env python3
"""gRPC unary latency through ringmesh vs direct, at a fixed request rate.

Question (issue 13): what p99 latency does ringmesh add to a gRPC unary call
at 1,000 requests/s (target: under 200 us)?

Starts the grpcio server of tests/fixtures/grpc_peer.py (generic handlers on
raw bytes) and ringmesh (one worker) with an h2c route to it; then, per
repetition, runs an open-loop client (one channel, calls scheduled every
1/rate s; each latency is measured from the call's scheduled time, so a
stall is not hidden by the calls it delays) for --duration seconds against
the server directly and through ringmesh, and prints p50/p99/p99.9 and the
difference. Every process it starts is stopped by PID. Loopback only.

  python3 bench/grpc_p99.py [--bin target/release/ringmesh] [--rate 1000] [--duration 5] [--reps 2]
                            [--load go|python] [--tls]

--load go (the default): server and client are bench/grpcload (Go,
google.golang.org/grpc, raw-bytes codec; `go build` on first use through the
Go module proxy); the client starts each call in its own goroutine, so it is
open loop for real and its own jitter is tens of microseconds. Pinned: the
server and client on CPU 1, ringmesh on CPU 0. --tls adds a third target:
an h2 (TLS, ALPN) client to ringmesh, which forwards over h2c.
--load python: the grpcio peer of tests/fixtures/grpc_peer.py and a
sequential Python client, whose own jitter (milliseconds) swamps the
figure: compare the two columns of the same run only.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, "..", "tests", "fixtures", "grpc_peer.py")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, limit=10.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


RT = []
# Targets whose process runs only while it is measured (busy pollers): name -> argv.
ONLY_WHILE_MEASURED = {}


def pin(cpu):
    """taskset to `cpu`, plus SCHED_FIFO with --rt."""
    return ["taskset", "-c", cpu] + RT


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


def find_grpcload():
    """bench/grpcload/grpcload, built with `go build` if missing."""
    src = os.path.join(HERE, "grpcload")
    path = os.path.join(src, "grpcload")
    if not os.path.exists(path):
        r = subprocess.run(["go", "build", "-o", "grpcload", "."], cwd=src)
        if r.returncode != 0 or not os.path.exists(path):
            raise SystemExit("go build of bench/grpcload failed (or pass --load python)")
    return path


def run_go(tool, port, rate, duration, tls=False):
    """(calls, errors, p50, p99, p99.9) in us, from one grpcload run."""
    cmd = pin("1") + [tool, "load", "-addr", f"127.0.0.1:{port}",
           "-rate", str(rate), "-duration", f"{duration}s"]
    if tls:
        cmd.append("-tls")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60)
    if out.returncode != 0:
        raise SystemExit(f"grpcload failed: {out.stderr.strip()}")
    r = json.loads(out.stdout)
    if r.get("first_error"):
        print(f"    first error: {r['first_error']}")
    return r["calls"], r["errors"], r["p50_us"], r["p99_us"], r["p999_us"], r["sched_p99_us"]


def make_cert(tmp):
    key, crt = os.path.join(tmp, "key.pem"), os.path.join(tmp, "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return crt, key


def run_load(grpc, port, rate, duration):
    ch = grpc.insecure_channel(f"127.0.0.1:{port}")
    call = ch.unary_unary("/t.T/Unary", request_serializer=lambda b: b, response_deserializer=lambda b: b)
    for _ in range(200):  # warm-up: connection, pools
        call(b"w", timeout=10)
    n = int(rate * duration)
    lat, errors = [], 0
    start = time.perf_counter() + 0.01
    for i in range(n):
        due = start + i / rate
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        try:
            call(b"x", timeout=10)
        except Exception:
            errors += 1
            continue
        lat.append(time.perf_counter() - due)
    ch.close()
    return lat, errors


def haproxy_cfg(hport, gport, global_extra=""):
    return f"""global
    nbthread 1
{global_extra}defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend f
    bind 127.0.0.1:{hport} proto h2
    default_backend b
backend b
    server s 127.0.0.1:{gport} proto h2
"""


def start_peers(tmp, gport, cpu, procs, busy=False):
    """HAProxy and nginx as h2c gRPC proxies to the same server, one process/worker each, pinned
    like ringmesh: the reference for what a proxy hop adds on this machine. With busy, also a
    HAProxy with `busy-polling` (nginx has no such setting)."""
    out = []
    for name, extra in [("haproxy", "")] + ([("haproxy-busy", "    busy-polling\n")] if busy else []):
        hport = free_port()
        hcfg = os.path.join(tmp, f"{name}.cfg")
        with open(hcfg, "w") as f:
            f.write(haproxy_cfg(hport, gport, extra))
        if extra:
            ONLY_WHILE_MEASURED[name] = pin(cpu) + ["haproxy", "-db", "-f", hcfg]
            out.append((name, hport, False))
            continue
        procs.append(subprocess.Popen(pin(cpu) + ["haproxy", "-db", "-f", hcfg], stdout=subprocess.DEVNULL,
                                      stderr=open(os.path.join(tmp, f"{name}.log"), "w")))
        if wait_port(hport):
            out.append((name, hport, False))
        else:
            print(f"    {name} did not listen")
    nport = free_port()
    ndir = os.path.join(tmp, "nginx")
    os.makedirs(os.path.join(ndir, "logs"), exist_ok=True)
    ncfg = os.path.join(ndir, "nginx.conf")
    with open(ncfg, "w") as f:
        f.write(f"""worker_processes 1;
daemon off;
pid {ndir}/nginx.pid;
error_log {ndir}/logs/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {ndir}/body;
    upstream g {{ server 127.0.0.1:{gport}; keepalive 16; }}
    server {{
        listen 127.0.0.1:{nport} http2;
        location / {{ grpc_pass grpc://g; }}
    }}
}}
""")
    procs.append(subprocess.Popen(pin(cpu) + ["nginx", "-p", ndir, "-c", ncfg],
                                  stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "nginx.log"), "w")))
    if wait_port(nport):
        out.append(("nginx", nport, False))
    else:
        print("    nginx did not listen")
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "target", "release", "ringmesh"))
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--load", choices=("go", "python"), default="go")
    ap.add_argument("--proxy-cpu", default="0",
                    help="CPU ringmesh is pinned to (Go load: server and client on CPU 1); 1 puts all on one CPU")
    ap.add_argument("--io", choices=("uring", "epoll"), default=None, help="ringmesh's I/O driver (default: its own)")
    ap.add_argument("--tls", action="store_true", help="also an h2 (TLS) client to ringmesh (Go load only)")
    ap.add_argument("--peers", action="store_true",
                    help="also HAProxy (proto h2 both sides) and nginx (grpc_pass) as h2c gRPC proxies, pinned like ringmesh")
    ap.add_argument("--base", default=None, help="a second ringmesh binary in the same run (A/B)")
    ap.add_argument("--busy-poll", action="store_true",
                    help="also a ringmesh with \"busy_poll\": true (and, with --peers, HAProxy with busy-polling), "
                         "pinned like the others: what a worker that never sleeps saves on this VM")
    ap.add_argument("--rt", action="store_true",
                    help="run every process SCHED_FIFO (chrt -f 10): other load on the machine cannot delay them, "
                         "and a CPU never idles while they wait (no vCPU wake-up cost)")
    a = ap.parse_args()
    if a.rt:
        RT.extend(["chrt", "-f", "10"])
    go = a.load == "go"
    if go:
        tool = find_grpcload()
    else:
        import grpc  # pip install grpcio

    procs = []
    tmp = tempfile.mkdtemp()
    try:
        rport, tport = free_port(), free_port()
        if go:
            server = subprocess.Popen(pin("1") + [tool, "serve", "-addr", "127.0.0.1:0"],
                                      stdout=subprocess.PIPE, text=True)
            procs.append(server)
            line = server.stdout.readline().split()
            if not line or line[0] != "ready":
                sys.exit("grpc server did not start")
            gport = int(line[1].rsplit(":", 1)[1])
        else:
            gport = free_port()
            server = subprocess.Popen([sys.executable, PEER, "server", str(gport), os.path.join(tmp, "c")],
                                      stdout=subprocess.PIPE, text=True)
            procs.append(server)
            if server.stdout.readline().strip() != "ready":
                sys.exit("grpc server did not start")
        backends = [{"internal_port": gport, "protocol": "h2c"}]
        routes = {str(rport): {"name": "grpc", "backends": backends}}
        tls = go and a.tls
        if tls:
            crt, key = make_cert(tmp)
            routes[str(tport)] = {"name": "grpc-tls", "backends": backends,
                                  "tls": {"certificates": [{"cert": crt, "key": key}]}}
        cfg = {"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 1, "routes": routes}
        path = os.path.join(tmp, "ringmesh.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        cmd = [a.bin, "run", "--config", path, "--log", "warn"]
        if a.io:
            cmd += ["--io", a.io]
        if go:
            cmd = pin(a.proxy_cpu) + cmd
        rm = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "rm.log"), "w"))
        procs.append(rm)
        if not wait_port(rport) or (tls and not wait_port(tport)):
            sys.exit("ringmesh did not listen")
        targets = [("direct", gport, False), ("ringmesh", rport, False)]
        if tls:
            targets.append(("ringmesh-tls", tport, True))
        if a.base:
            bport = free_port()
            bcfg = dict(cfg, routes={str(bport): {"name": "grpc", "backends": backends}})
            bpath = os.path.join(tmp, "base.json")
            with open(bpath, "w") as f:
                json.dump(bcfg, f)
            bcmd = pin(a.proxy_cpu) + [os.path.abspath(a.base), "run", "--config", bpath, "--log", "warn"]
            procs.append(subprocess.Popen(bcmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            if not wait_port(bport):
                sys.exit("base ringmesh did not listen")
            targets.append(("base", bport, False))
        if a.busy_poll:
            bport = free_port()
            bcfg = dict(cfg, busy_poll=True, routes={str(bport): {"name": "grpc", "backends": backends}})
            bpath = os.path.join(tmp, "busy.json")
            with open(bpath, "w") as f:
                json.dump(bcfg, f)
            # A busy poller takes its whole CPU: it runs only while it is measured.
            ONLY_WHILE_MEASURED["ringmesh-busy"] = pin(a.proxy_cpu) + [a.bin, "run", "--config", bpath,
                                                                      "--log", "warn"] + (["--io", a.io] if a.io else [])
            targets.append(("ringmesh-busy", bport, False))
        if a.peers and go:
            targets += start_peers(tmp, gport, a.proxy_cpu, procs, a.busy_poll)
        client = "Go (bench/grpcload)" if go else "Python grpcio"
        print(f"gRPC unary, {a.rate:.0f} req/s for {a.duration:.0f} s, {client} client, latency (us) "
              f"from each call's start (Go) or scheduled time (Python); 'sched p99' from the schedule")
        print(f"{'rep':>3} {'target':<13} {'calls':>6} {'err':>4} {'p50':>8} {'p99':>8} {'p99.9':>8} {'sched p99':>10}")
        for rep in range(1, a.reps + 1):
            res = {}
            for name, port, t in targets:
                lazy = None
                if name in ONLY_WHILE_MEASURED:
                    lazy = subprocess.Popen(ONLY_WHILE_MEASURED[name], stdout=subprocess.DEVNULL,
                                            stderr=subprocess.DEVNULL)
                    procs.append(lazy)
                    if not wait_port(port):
                        sys.exit(f"{name} did not listen")
                    time.sleep(0.5)
                if go:
                    calls, err, p50, p99, p999, sp99 = run_go(tool, port, a.rate, a.duration, t)
                else:
                    lat, err = run_load(grpc, port, a.rate, a.duration)
                    calls, p50, p99, p999 = len(lat), pct(lat, .5) * 1e6, pct(lat, .99) * 1e6, pct(lat, .999) * 1e6
                    sp99 = p99
                if lazy:
                    lazy.terminate()
                    try:
                        lazy.wait(timeout=5)
                    except subprocess.TimeoutExpired:
                        lazy.kill()
                        lazy.wait()
                res[name] = p99
                print(f"{rep:>3} {name:<13} {calls:>6} {err:>4} {p50:>8.0f} {p99:>8.0f} {p999:>8.0f} {sp99:>10.0f}")
            for name, _, _ in targets[1:]:
                if name not in res:
                    continue
                print(f"{rep:>3} added p99 ({name}): {res[name] - res['direct']:.0f} us")
    finally:
        # SIGTERM first: a SIGKILLed nginx master leaves its worker behind.
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()
