#!/usr/bin/env python3
"""How fast does one routes push reach N watching nodes? (docs/scale-out.md)

Starts a throw-away etcd (Debian's etcd-server) on free loopback ports, opens
N watch streams on one key through etcd's v3 JSON gateway (`/v3/watch`, as
every ringmesh node does), writes the key, and reports when each watcher saw
the new revision: p50, p99, max. Repeats a few pushes. Bounded: N streams,
ROUNDS pushes, a 30 s timeout per round; etcd is stopped by PID.

    python3 bench/etcd_fanout.py [N] [ROUNDS]
"""
import base64, json, os, socket, subprocess, sys, tempfile, threading, time
import http.client

N = int(sys.argv[1]) if len(sys.argv) > 1 else 500
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 5
KEY = base64.b64encode(b"/bench/routes").decode()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def call(port, path, body):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    c.request("POST", path, json.dumps(body))
    r = c.getresponse()
    out = json.loads(r.read() or b"{}")
    c.close()
    return out


def watcher(port, seen, ready, idx):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    c.request("POST", "/v3/watch", json.dumps({"create_request": {"key": KEY}}))
    r = c.getresponse()
    ready.release()
    while True:
        line = r.readline()  # http.client de-chunks
        if not line:
            return
        msg = json.loads(line).get("result", {})
        for ev in msg.get("events", []):
            seen[idx].append((int(ev["kv"]["mod_revision"]), time.monotonic()))


def main():
    cport, pport = free_port(), free_port()
    d = tempfile.mkdtemp(prefix="etcd-fanout-")
    peer = f"http://127.0.0.1:{pport}"
    etcd = subprocess.Popen(
        ["etcd", "--name=b", f"--data-dir={d}/data",
         f"--listen-client-urls=http://127.0.0.1:{cport}",
         f"--advertise-client-urls=http://127.0.0.1:{cport}",
         f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
         f"--initial-cluster=b={peer}"],
        stdout=subprocess.DEVNULL, stderr=open(f"{d}/etcd.log", "w"))
    try:
        for _ in range(200):
            try:
                call(cport, "/v3/kv/range", {"key": KEY})
                break
            except OSError:
                time.sleep(0.05)
        seen = [[] for _ in range(N)]
        ready = threading.Semaphore(0)
        for i in range(N):
            threading.Thread(target=watcher, args=(cport, seen, ready, i), daemon=True).start()
        for _ in range(N):
            ready.acquire()
        time.sleep(0.5)  # every watch created
        print(f"etcd {subprocess.run(['etcd', '--version'], capture_output=True, text=True).stdout.split()[2]}, "
              f"{N} watchers on one key, {ROUNDS} pushes (loopback; shared, noisy machine)")
        for rnd in range(ROUNDS):
            value = base64.b64encode(json.dumps({"round": rnd, "pad": "x" * 2000}).encode()).decode()
            t0 = time.monotonic()
            rev = int(call(cport, "/v3/kv/put", {"key": KEY, "value": value})["header"]["revision"])
            deadline = t0 + 30
            while time.monotonic() < deadline:
                if all(any(r == rev for r, _ in s) for s in seen):
                    break
                time.sleep(0.005)
            lat = sorted((next((t for r, t in s if r == rev), deadline) - t0) * 1000 for s in seen)
            missing = sum(1 for s in seen if not any(r == rev for r, _ in s))
            print(f"push {rnd}: p50 {lat[len(lat) // 2]:.1f} ms, p99 {lat[int(len(lat) * 0.99) - 1]:.1f} ms, "
                  f"max {lat[-1]:.1f} ms, missed {missing}")
            time.sleep(0.2)
    finally:
        etcd.kill()
        etcd.wait()


if __name__ == "__main__":
    main()
