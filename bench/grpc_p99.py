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

The client is Python (grpcio): its own cost per call is of the order of the
figure measured, so compare the two columns of the same run only.
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


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))]


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(HERE, "..", "target", "release", "ringmesh"))
    ap.add_argument("--rate", type=float, default=1000)
    ap.add_argument("--duration", type=float, default=5)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    import grpc  # pip install grpcio

    procs = []
    tmp = tempfile.mkdtemp()
    try:
        gport, rport = free_port(), free_port()
        server = subprocess.Popen([sys.executable, PEER, "server", str(gport), os.path.join(tmp, "c")],
                                  stdout=subprocess.PIPE, text=True)
        procs.append(server)
        if server.stdout.readline().strip() != "ready":
            sys.exit("grpc server did not start")
        cfg = {"dashboard_port": "", "listen_host": "127.0.0.1", "workers": 1,
               "routes": {str(rport): {"name": "grpc",
                                       "backends": [{"internal_port": gport, "protocol": "h2c"}]}}}
        path = os.path.join(tmp, "ringmesh.json")
        with open(path, "w") as f:
            json.dump(cfg, f)
        rm = subprocess.Popen([a.bin, "run", "--config", path, "--log", "warn"],
                              stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "rm.log"), "w"))
        procs.append(rm)
        if not wait_port(rport):
            sys.exit("ringmesh did not listen")
        print(f"gRPC unary, {a.rate:.0f} req/s for {a.duration:.0f} s, latency from the scheduled time (us)")
        print(f"{'rep':>3} {'target':<9} {'calls':>6} {'err':>4} {'p50':>8} {'p99':>8} {'p99.9':>8}")
        for rep in range(1, a.reps + 1):
            res = {}
            for name, port in (("direct", gport), ("ringmesh", rport)):
                lat, err = run_load(grpc, port, a.rate, a.duration)
                res[name] = lat
                print(f"{rep:>3} {name:<9} {len(lat):>6} {err:>4} {pct(lat, .5) * 1e6:>8.0f} "
                      f"{pct(lat, .99) * 1e6:>8.0f} {pct(lat, .999) * 1e6:>8.0f}")
            added = (pct(res["ringmesh"], .99) - pct(res["direct"], .99)) * 1e6
            print(f"{rep:>3} added p99: {added:.0f} us")
    finally:
        for p in procs:
            p.kill()
            p.wait()


if __name__ == "__main__":
    main()
