#!/usr/bin/env python3
"""Soak: does ringmesh hold steady under a long mixed load, or does something grow?

Runs ringmesh (one http route: nginx by default, a WebSocket-style echo backend by Host) under
a mixed load for --duration seconds, sampling its RSS, open fds (sockets, pipes, other) and
thread count every --interval seconds into a CSV, then draws a PNG and prints a verdict:

  * alive throughout, and the same thread count in every sample;
  * no upward trend after warm-up: the mean of the last third of the load phase may exceed the
    mean of the middle third by at most 5% + 4 MiB (RSS) and 5% + 16 (fds);
  * after the load: no client socket left, every other fd back to the pre-traffic baseline;
    sockets above the baseline must be idle upstream connections in the keep-alive pools
    (closed after 30 s idle: the full run waits for that, so there it is the exact baseline),
    and spare splice pipes stay within the pools' bound.

The load, all at once: wrk keep-alive GETs, wrk with `Connection: close` (a new connection per
request), wrk downloads of 64 KiB and 4 MiB, wrk uploads of 64 KiB and 2 MiB, WebSocket-style
upgrades with echo round trips (short-lived and long-lived), and N idle keep-alive connections
held open for the whole run (checked at its end).

Usage: soak.py [--duration S | --quick | --smoke] [--port-base P] ... (bench/soak.sh wraps it);
       soak.py --plot CSV PNG   redraws a plot from a CSV.
Every process is started here, recorded in $BENCH_PIDFILE and stopped by PID.
"""

import argparse
import csv
import datetime
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True

import configs  # noqa: E402
import loads  # noqa: E402
from procs import CLK_TCK, BenchError, Managed, Registry, proc_stat, proc_status  # noqa: E402

HOST = "127.0.0.1"
WORKERS_DEFAULT = 2
# Idle pipes a worker's splice pool keeps (PipePool::new(.., 64) in src/worker/mod.rs), and
# idle upstream connections per backend per worker (MAX_IDLE_PER_BACKEND in src/http/upstream.rs).
PIPES_KEPT_PER_WORKER = 64
POOLED_PER_BACKEND_PER_WORKER = 64
POOL_IDLE_S = 30   # IDLE_TIMEOUT in src/http/upstream.rs
LOADS = ("keepalive", "newconn", "64k", "4m-down", "upload", "ws")
CSV_FIELDS = ["t_s", "phase", "rss_kib", "fds", "sockets", "pipes", "other_fds", "threads",
              "cpu_s"]


def log(msg):
    print(f"soak: {msg}", file=sys.stderr, flush=True)


class Interrupted(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# What ringmesh holds

def fd_counts(pid):
    """Open fds of pid by kind: sockets, pipes, other (io_uring, eventfd, files...)."""
    out = {"fds": 0, "sockets": 0, "pipes": 0, "other_fds": 0}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    for n in names:
        try:
            t = os.readlink(f"/proc/{pid}/fd/{n}")
        except OSError:
            continue   # closed between listdir and readlink
        out["fds"] += 1
        if t.startswith("socket:"):
            out["sockets"] += 1
        elif t.startswith("pipe:"):
            out["pipes"] += 1
        else:
            out["other_fds"] += 1
    return out


def socket_roles(pid, route_port, backend_ports):
    """ringmesh's sockets by role, from /proc/PID/fd inodes matched in /proc/net/tcp:
    listen (its listeners), client (accepted on the route port), upstream (to a backend), other.
    """
    inodes = set()
    try:
        for n in os.listdir(f"/proc/{pid}/fd"):
            try:
                t = os.readlink(f"/proc/{pid}/fd/{n}")
            except OSError:
                continue
            if t.startswith("socket:["):
                inodes.add(t[8:-1])
    except OSError:
        return None
    roles = {"listen": 0, "client": 0, "upstream": 0, "other": 0}
    seen = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    p = line.split()
                    if len(p) < 10 or p[9] not in inodes or p[9] in seen:
                        continue
                    seen.add(p[9])
                    lport = int(p[1].rsplit(":", 1)[1], 16)
                    rport = int(p[2].rsplit(":", 1)[1], 16)
                    if p[3] == "0A":
                        roles["listen"] += 1
                    elif lport == route_port:
                        roles["client"] += 1
                    elif rport in backend_ports:
                        roles["upstream"] += 1
                    else:
                        roles["other"] += 1
        except OSError:
            pass
    roles["other"] += len(inodes - seen)   # unix sockets, netlink, ...
    return roles


class Sampler(threading.Thread):
    """Samples one process every `interval` s into rows (and a CSV file as it goes)."""

    def __init__(self, pid, interval, csv_path):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.rows, self.phase = [], "baseline"
        self.t0 = time.monotonic()
        self.died_at = None
        self._stop_event = threading.Event()
        self._f = open(csv_path, "w", newline="")
        self._w = csv.DictWriter(self._f, fieldnames=CSV_FIELDS)
        self._w.writeheader()

    def sample(self):
        st, status, fds = proc_stat(self.pid), proc_status(self.pid), fd_counts(self.pid)
        if st is None or status is None or fds is None or st["state"] == "Z":
            return None
        row = {"t_s": round(time.monotonic() - self.t0, 2), "phase": self.phase,
               "rss_kib": status["VmRSS"], "threads": status["Threads"],
               "cpu_s": round((st["utime"] + st["stime"]) / CLK_TCK, 2)}
        row.update(fds)
        return row

    def run(self):
        next_at = time.monotonic()
        while not self._stop_event.is_set():
            row = self.sample()
            if row is None:
                if self.died_at is None:
                    self.died_at = round(time.monotonic() - self.t0, 2)
            else:
                self.rows.append(row)
                self._w.writerow(row)
                self._f.flush()
            next_at += self.interval
            self._stop_event.wait(max(0.0, next_at - time.monotonic()))

    def finish(self):
        self._stop_event.set()
        self.join(timeout=10)
        self._f.close()


# ---------------------------------------------------------------------------------------------
# The load

def wrk_script(d, name, pace_ms, upload=False):
    """A wrk Lua script: `pace_ms` between a connection's requests; uploads alternate bodies."""
    path = os.path.join(d, f"{name}.lua")
    with open(path, "w") as f:
        if upload:
            f.write("""-- POST /upload: three 64 KiB bodies, then one 2 MiB body
local small = string.rep("s", 64 * 1024)
local big = string.rep("B", 2 * 1024 * 1024)
local n = 0
request = function()
  n = n + 1
  local body = small
  if n % 4 == 0 then body = big end
  return wrk.format("POST", "/upload", {["Content-Type"] = "application/octet-stream"}, body)
end
""")
        f.write(f"function delay() return {int(pace_ms)} end\n")
    return path


class WsLoad:
    """WebSocket-style clients: upgrade through ringmesh, echo, close; some stay for the run."""

    def __init__(self, port, short_conns, long_conns, pace_ms, seed=1):
        self.port, self.pace = port, pace_ms / 1000.0
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok_conns = self.ok_msgs = 0
        self.failures = []
        self.threads = [threading.Thread(target=self._short, args=(seed + i,), daemon=True)
                        for i in range(short_conns)]
        self.threads += [threading.Thread(target=self._long, daemon=True)
                         for _ in range(long_conns)]

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=15)

    def _fail(self, what):
        with self.lock:
            self.failures.append(what)

    def _open(self):
        s = socket.create_connection((HOST, self.port), timeout=10)
        s.settimeout(10)
        s.sendall(b"GET /ws HTTP/1.1\r\nHost: ws\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = s.recv(4096)
            if not d:
                raise EOFError("closed before the 101")
            buf += d
        head, rest = buf.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise ValueError(head.split(b"\r\n")[0].decode("latin-1"))
        if rest:
            raise ValueError("bytes after the 101")
        return s

    @staticmethod
    def _echo(s, payload):
        s.sendall(payload)
        got = b""
        while len(got) < len(payload):
            d = s.recv(len(payload) - len(got))
            if not d:
                raise EOFError(f"closed after {len(got)} of {len(payload)} echoed bytes")
            got += d
        if got != payload:
            raise ValueError("echo differs")

    def _short(self, seed):
        rng = random.Random(seed)
        while not self.stop.is_set():
            s = None
            try:
                s = self._open()
                for _ in range(rng.randint(1, 40)):
                    self._echo(s, rng.randbytes(rng.choice((16, 512, 4096, 65536))))
                    with self.lock:
                        self.ok_msgs += 1
                    if self.stop.wait(self.pace):
                        break
                with self.lock:
                    self.ok_conns += 1
            except (OSError, EOFError, ValueError) as e:
                self._fail(repr(e))
                self.stop.wait(0.2)
            finally:
                if s is not None:
                    s.close()

    def _long(self):
        s = None
        try:
            s = self._open()
            n = 0
            while not self.stop.wait(1.0):
                n += 1
                self._echo(s, f"keepalive {n}\n".encode())
                with self.lock:
                    self.ok_msgs += 1
            with self.lock:
                self.ok_conns += 1
        except (OSError, EOFError, ValueError) as e:
            self._fail("long-lived: " + repr(e))
        finally:
            if s is not None:
                s.close()


class IdleConns:
    """N client connections that each do one keep-alive GET, then sit idle until the end."""

    def __init__(self, port, n):
        self.port, self.n = port, n
        self.socks, self.failed, self.first_error = [], 0, None

    def open(self, timeout=90.0):
        deadline = time.monotonic() + timeout
        for _ in range(self.n):
            s = None
            try:
                if time.monotonic() > deadline:
                    raise TimeoutError("opening took too long")
                s = socket.create_connection((HOST, self.port), timeout=5)
                status, _, _ = loads.http_get(s, loads._Reader(s), "/small")
                if status != 200:
                    raise ValueError(f"status {status}")
                self.socks.append(s)
            except (OSError, EOFError, ValueError) as e:
                self.failed += 1
                self.first_error = self.first_error or repr(e)
                if s is not None:
                    s.close()
        return f"{len(self.socks)} open, {self.failed} failed" + (
            f" ({self.first_error})" if self.first_error else "")

    def still_open(self):
        """How many are still open: nothing to read and no EOF (ringmesh did not close them)."""
        n = 0
        for s in self.socks:
            try:
                s.setblocking(False)
                s.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                n += 1
            except OSError:
                pass
        return n

    def close(self):
        for s in self.socks:
            s.close()
        self.socks = []


# ---------------------------------------------------------------------------------------------
# Configs

def write_nginx(d, port, cpus, nofile):
    """nginx backend: /small, /64k, /4m from files, /upload reads and discards a body."""
    www = os.path.join(d, "www")
    os.makedirs(www, exist_ok=True)
    files = {"small": configs.SMALL_BODY, "64k": configs.BIG_BODY,
             "4m": configs.BIG_BODY * 64}
    for name, body in files.items():
        with open(os.path.join(www, name), "wb") as f:
            f.write(body)
        os.chmod(os.path.join(www, name), 0o644)
    for p in (d, www):
        os.chmod(p, 0o755)
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(configs._nginx_common(d, cpus, nofile) + f"""http {{
{configs._nginx_http_common(d)}    default_type application/octet-stream;
    sendfile on;
    client_body_buffer_size 128k;
    server {{
        listen {HOST}:{port} backlog=4096;
        root {www};
        location = /small {{ }}
        location = /64k {{ }}
        location = /4m {{ }}
        location = /upload {{
            client_max_body_size 64m;
            return 200 "uploaded\\n";
        }}
    }}
}}
""")
    return configs.nginx_argv(d, conf)


def write_ringmesh(d, port, web_port, ws_port, workers, keepalive_s):
    """`keepalive_s`: the idle connections must outlive the load (the default closes an idle
    keep-alive client connection after 60 s)."""
    cfg = {
        "dashboard_port": "",
        "service_name": "soak",
        "workers": workers,
        "listen_host": HOST,
        "routes": {
            str(port): {"name": "web", "protocol": "http",
                        "timeouts": {"keepalive": f"{int(keepalive_s)}s"},
                        "backends": [{"name": "nginx", "internal_host": HOST,
                                      "internal_port": str(web_port)}]},
            "ws": {"listen": str(port), "hosts": ["ws"], "protocol": "http",
                   "backends": [{"name": "ws-echo", "internal_host": HOST,
                                 "internal_port": str(ws_port)}]},
        },
    }
    conf = os.path.join(d, "ringmesh.json")
    with open(conf, "w") as f:
        json.dump(cfg, f, indent=2)
    return conf


# ---------------------------------------------------------------------------------------------
# Verdict

def mean(xs):
    return statistics.fmean(xs) if xs else 0.0


def slope_per_min(rows, key):
    """Least-squares slope of rows[key] against t_s, per minute."""
    if len(rows) < 2:
        return 0.0
    xs = [r["t_s"] for r in rows]
    ys = [float(r[key]) for r in rows]
    mx, my = mean(xs), mean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 60.0 * sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else 0.0


TRENDS = (("rss_kib", 0.05, 4096, "RSS KiB"), ("fds", 0.05, 16, "fds"))


def verdict(rows, base, end, roles_base, roles_end, workers, backends, died_at, pools_empty,
            idle=(0, 0)):
    """Returns (passed, lines of text). `pools_empty`: the settle outlasted the pools' idle
    timeout, so no pooled upstream connection may be left either."""
    lines, ok = [], True

    def check(cond, text):
        nonlocal ok
        ok = ok and cond
        lines.append(f"- {'ok  ' if cond else 'FAIL'} {text}")

    check(died_at is None, "ringmesh ran throughout" +
          ("" if died_at is None else f" (gone at t={died_at} s)"))
    threads = sorted({r["threads"] for r in rows})
    check(threads == [base["threads"]],
          f"thread count {base['threads']} in every sample (seen: {threads})")
    # The soak's own premise: the idle connections stayed open for the whole load.
    check(idle[1] == idle[0], f"idle connections still open at the end of the load: "
                              f"{idle[1]} of {idle[0]}")
    load = [r for r in rows if r["phase"] == "load"]
    n = len(load)
    if n >= 6:
        mid, last = load[n // 3: 2 * n // 3], load[2 * n // 3:]
        for key, rel, tol, label in TRENDS:
            m, lst = mean([r[key] for r in mid]), mean([r[key] for r in last])
            limit = m * (1 + rel) + tol
            check(lst <= limit,
                  f"{label}: mean of the last third {lst:,.0f} vs middle third {m:,.0f} "
                  f"(limit {limit:,.0f}); slope after warm-up {slope_per_min(mid + last, key):+,.1f}/min")
    else:
        check(False, f"only {n} samples under load: too few to judge a trend")
    pipe_cap = 2 * PIPES_KEPT_PER_WORKER * workers
    pool_cap = POOLED_PER_BACKEND_PER_WORKER * workers * backends
    if end is None or roles_end is None:
        check(False, "ringmesh gone before the final count")
        return ok, lines
    check(end["other_fds"] == base["other_fds"],
          f"non-socket, non-pipe fds back to the baseline: {base['other_fds']} -> {end['other_fds']}")
    check(roles_end["client"] == 0, f"client sockets left: {roles_end['client']}")
    check(roles_end["listen"] == roles_base["listen"],
          f"listeners: {roles_base['listen']} -> {roles_end['listen']}")
    # Pooled upstream connections (the start-up probe already parks some) are counted apart:
    # every other socket must be exactly as at the baseline.
    fixed0 = base["sockets"] - roles_base["upstream"]
    fixed1 = end["sockets"] - roles_end["upstream"]
    check(fixed1 == fixed0 and roles_end["other"] == roles_base["other"],
          f"sockets other than pooled upstream connections: {fixed0} -> {fixed1}")
    pooled = roles_end["upstream"]
    check(pooled == 0 if pools_empty else pooled <= pool_cap,
          f"idle pooled upstream connections: {roles_base['upstream']} -> {pooled}"
          + (" (all closed after 30 s idle)" if pooled == 0 else
             f" (at most {pool_cap}; they close after 30 s idle)"))
    check(end["pipes"] <= base["pipes"] + pipe_cap,
          f"pipes {base['pipes']} -> {end['pipes']} (spare splice pipes kept, at most {pipe_cap})")
    check(end["threads"] == base["threads"], f"threads {base['threads']} -> {end['threads']}")
    return ok, lines


# ---------------------------------------------------------------------------------------------
# Plot

def plot(csv_path, png_path, title=None):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("matplotlib is not installed (apt-get install python3-matplotlib); no plot")
        return False
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        log("no samples to plot")
        return False
    t = [float(r["t_s"]) for r in rows]
    col = {k: [float(r[k]) for r in rows] for k in CSV_FIELDS if k not in ("t_s", "phase")}
    fig, axes = plt.subplots(3, 1, figsize=(11, 8), sharex=True)
    panels = [
        (axes[0], [("rss_kib", "RSS", 1 / 1024, "#d62728")], "RSS (MiB)"),
        (axes[1], [("fds", "all fds", 1, "#1f77b4"), ("sockets", "sockets", 1, "#2ca02c"),
                   ("pipes", "pipes", 1, "#ff7f0e"), ("other_fds", "other", 1, "#7f7f7f")],
         "open fds"),
        (axes[2], [("threads", "threads", 1, "#9467bd")], "threads"),
    ]
    spans = []
    for i, r in enumerate(rows):
        if not spans or spans[-1][0] != r["phase"]:
            spans.append([r["phase"], t[i], t[i]])
        spans[-1][2] = t[i]
    shade = {"baseline": "#eeeeee", "load": "#fff3e0", "settle": "#e8f5e9"}
    for ax, series, label in panels:
        for phase, a, b in spans:
            ax.axvspan(a, b, color=shade.get(phase, "#ffffff"), zorder=0)
        for key, name, scale, color in series:
            ax.plot(t, [v * scale for v in col[key]], label=name, color=color, linewidth=1.2)
        ax.set_ylabel(label)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        if len(series) > 1:
            ax.legend(loc="upper right", fontsize=8, ncol=len(series))
    load_t = [ti for ti, r in zip(t, rows) if r["phase"] == "load"]
    if len(load_t) >= 6:
        n = len(load_t)
        for x in (load_t[n // 3], load_t[2 * n // 3]):
            for ax in axes:
                ax.axvline(x, color="#555555", linestyle=":", linewidth=0.8)
    axes[-1].set_xlabel("seconds (grey: baseline, orange: load, green: after the load;"
                        " dotted: thirds of the load phase)")
    fig.suptitle(title or os.path.basename(csv_path), fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(png_path, dpi=90)
    return True


# ---------------------------------------------------------------------------------------------
# The run

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--duration", type=float, default=600, help="load seconds (default 600)")
    ap.add_argument("--quick", action="store_true", help="60 s of load, 200 idle connections")
    ap.add_argument("--smoke", action="store_true",
                    help="a few seconds, 20 idle connections (what the test suite runs)")
    ap.add_argument("--port-base", type=int, default=18100,
                    help="ringmesh on P, nginx on P+1, the echo backend on P+2 (default 18100)")
    ap.add_argument("--idle-conns", type=int, default=None, help="idle connections (default 500)")
    ap.add_argument("--loads", default=",".join(LOADS),
                    help=f"which loads to run (default all: {','.join(LOADS)}); "
                         "to find which one drives a trend")
    ap.add_argument("--workers", type=int, default=WORKERS_DEFAULT)
    ap.add_argument("--pace", type=float, default=2.0,
                    help="ms between a load connection's small requests (x10 for big bodies)")
    ap.add_argument("--interval", type=float, default=None, help="sampling seconds (default 1)")
    ap.add_argument("--settle", type=float, default=None,
                    help="longest wait after the load for fds to come back (default 45 s)")
    ap.add_argument("--ringmesh-bin", default=os.environ.get("RINGMESH_BIN"))
    ap.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--keep-tmp", action="store_true")
    ap.add_argument("--plot", nargs=2, metavar=("CSV", "PNG"), help="only redraw a plot")
    a = ap.parse_args(argv)
    a.mode = "smoke" if a.smoke else "quick" if a.quick else "full"
    a.loads = [x.strip() for x in a.loads.split(",") if x.strip()]
    unknown = set(a.loads) - set(LOADS)
    if unknown:
        ap.error(f"unknown loads {sorted(unknown)}; choose from {','.join(LOADS)}")
    if a.smoke:
        a.duration = 4
    elif a.quick:
        a.duration = 60
    if a.idle_conns is None:
        a.idle_conns = {"smoke": 20, "quick": 200}.get(a.mode, 500)
    if a.interval is None:
        a.interval = 0.25 if a.smoke else 1.0
    if a.settle is None:
        a.settle = 2 if a.smoke else 45
    return a


class Soak:
    def __init__(self, a):
        self.a = a
        self.cpus = sorted(os.sched_getaffinity(0))
        self.tmp = tempfile.mkdtemp(prefix="ringmesh-soak-")
        os.chmod(self.tmp, 0o755)   # nginx workers (user nobody) read the files
        self.registry = Registry(os.environ.get("BENCH_PIDFILE") or os.path.join(self.tmp, "pids"))
        self.port, self.web_port, self.ws_port = a.port_base, a.port_base + 1, a.port_base + 2
        self.bin = a.ringmesh_bin or os.path.join(
            os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target"), "release",
            "ringmesh")
        self.bin = os.path.abspath(self.bin)
        self.nofile = self._raise_nofile()
        self.sampler = None
        self.loads = []
        self.ws = None
        self.idle = None
        self.notes = []

    @staticmethod
    def _raise_nofile():
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
                soft = hard
            except (ValueError, OSError):
                pass
        return soft

    def _start(self, name, argv, env=None, **kw):
        return Managed(self.registry, name, argv, self.cpus, os.path.join(self.tmp, name + ".log"),
                       env=env, **kw).start()

    def setup(self):
        a = self.a
        for tool in ("nginx", "wrk", "taskset"):
            if not shutil.which(tool):
                raise SystemExit(f"{tool} is not installed (bench/run.sh installs it)")
        if not os.access(self.bin, os.X_OK):
            raise SystemExit(f"no ringmesh binary at {self.bin} (build it, or --ringmesh-bin)")
        busy = [p for p in (self.port, self.web_port, self.ws_port) if not loads.port_free(p)]
        if busy:
            raise SystemExit(f"ports busy on 127.0.0.1: {busy} (another soak? --port-base)")
        d = os.path.join(self.tmp, "nginx")
        os.makedirs(d)
        nginx = self._start("nginx", write_nginx(d, self.web_port, self.cpus, self.nofile))
        ws = self._start("ws-echo", [sys.executable, "-u", os.path.join(HERE, "soak_ws.py"),
                                     str(self.ws_port)])
        for p, port in ((nginx, self.web_port), (ws, self.ws_port)):
            if not loads.wait_port(port, 15, p.alive):
                raise BenchError(f"{p.name} did not listen on {port}: {p.log_tail()}")
        conf = write_ringmesh(self.tmp, self.port, self.web_port, self.ws_port, a.workers,
                              a.duration + 600)
        env = dict(os.environ)
        env.setdefault("RINGMESH_LOG", "warn")
        self.rm = self._start("ringmesh", [self.bin, "run", "--config", conf], env=env)
        if not loads.wait_port(self.port, 15, self.rm.alive):
            raise BenchError(f"ringmesh did not listen on {self.port}: {self.rm.log_tail()}")
        err, _ = loads.probe_http(self.port, configs.SMALL_BODY, configs.BIG_BODY)
        if err:
            raise BenchError("ringmesh does not proxy: " + err)

    def start_load(self):
        a, d = self.a, int(round(self.a.duration))
        url = f"http://{HOST}:{self.port}"
        pace, big = a.pace, a.pace * 10
        specs = [
            ("wrk-keepalive", 16, "/small", [], wrk_script(self.tmp, "keepalive", pace)),
            ("wrk-newconn", 4, "/small", ["-H", "Connection: close"],
             wrk_script(self.tmp, "newconn", pace)),
            ("wrk-64k", 2, "/64k", [], wrk_script(self.tmp, "64k", pace)),
            ("wrk-4m-down", 1, "/4m", [], wrk_script(self.tmp, "4m", big)),
            ("wrk-upload", 2, "/upload", [], wrk_script(self.tmp, "upload", big, upload=True)),
        ]
        for name, conns, path, extra, script in specs:
            if name[len("wrk-"):] not in a.loads:
                continue
            argv = ["wrk", "-t", "1", "-c", str(conns), "-d", f"{d}s", "--timeout", "10s",
                    "-s", script] + extra + [url + path]
            self.loads.append(self._start(name, argv))
        on = "ws" in a.loads
        self.ws = WsLoad(self.port, short_conns=4 * on, long_conns=4 * on, pace_ms=pace * 5)
        self.ws.start()

    def open_idle(self):
        self.idle = IdleConns(self.port, self.a.idle_conns)
        return self.idle.open()

    def close_idle(self):
        """Closes the idle connections; returns how many were still open."""
        if self.idle is None:
            return 0
        n = self.idle.still_open()
        self.idle.close()
        return n

    def run(self):
        a = self.a
        base_name = output_base(a.out_dir, a.mode)
        csv_path = base_name + ".csv"
        self.setup()
        time.sleep(1.0)
        self.sampler = Sampler(self.rm.pid, a.interval, csv_path)
        self.sampler.start()
        time.sleep(max(3.0, 3 * a.interval))
        base = self.sampler.sample()
        roles_base = socket_roles(self.rm.pid, self.port, {self.web_port, self.ws_port})
        log(f"baseline: {base}")
        self.sampler.phase = "load"
        t_load = time.monotonic()
        idle_line = self.open_idle()
        log(f"idle connections: {idle_line}")
        self.start_load()
        log(f"mixed load for {a.duration:.0f} s")
        wrk = {}
        deadline = t_load + a.duration + 60
        for p in self.loads:
            try:
                p.popen.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.notes.append(f"{p.name} overran its duration; stopped")
            p.stop()
            try:
                with open(p.log_path) as f:
                    wrk[p.name] = loads.parse_wrk(f.read())
            except (OSError, BenchError) as e:
                wrk[p.name] = {"requests": 0, "errors": {"parse": str(e)}}
        self.ws.finish()
        idle_left = self.close_idle()
        self.sampler.phase = "settle"
        log("load over; waiting for fds to come back")
        deadline = time.monotonic() + a.settle
        end = None
        fixed0 = base["sockets"] - roles_base["upstream"]
        while time.monotonic() < deadline:
            # Done when only the fixed sockets are left (listeners): the pools emptied too.
            end = self.sampler.sample()
            if end is None or (end["sockets"] <= fixed0 and
                               end["other_fds"] == base["other_fds"]):
                break
            time.sleep(0.5)
        time.sleep(max(1.0, 2 * a.interval))
        end = self.sampler.sample()
        roles_end = socket_roles(self.rm.pid, self.port, {self.web_port, self.ws_port})
        self.sampler.finish()
        passed, lines = verdict(self.sampler.rows, base, end, roles_base, roles_end,
                                a.workers, 2, self.sampler.died_at,
                                pools_empty=a.settle >= POOL_IDLE_S + 5,
                                idle=(a.idle_conns, idle_left))
        report = self.report(base, end, roles_base, roles_end, wrk, idle_line, passed, lines)
        with open(base_name + ".md", "w") as f:
            f.write(report)
        print(report, flush=True)
        log(f"written: {csv_path}, {base_name}.md")
        if not a.no_plot:
            title = (f"ringmesh soak {datetime.date.today().isoformat()}: {a.duration:.0f} s mixed"
                     f" load, {a.workers} workers, {a.idle_conns} idle conns"
                     f" — {'PASS' if passed else 'FAIL'}")
            if plot(csv_path, base_name + ".png", title):
                log(f"written: {base_name}.png")
        return passed

    def report(self, base, end, roles_base, roles_end, wrk, idle_line, passed, lines):
        a = self.a
        out = [f"# ringmesh soak, {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} "
               f"on {socket.gethostname()}", "",
               f"{a.mode} mode: {a.duration:.0f} s of mixed load, {a.workers} workers, "
               f"{a.idle_conns} idle connections, loads {','.join(a.loads)}, pace {a.pace:g} ms, "
               f"sampled every "
               f"{a.interval:g} s; ringmesh {self.bin}; {os.cpu_count()} CPUs, load average "
               f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end.", "",
               "| load | requests | errors |", "|---|---|---|"]
        for name, r in wrk.items():
            out.append(f"| {name} | {r.get('requests', 0):,} | {r.get('errors') or 0} |")
        ws = self.ws
        out.append(f"| websocket-style echo | {ws.ok_conns:,} upgrades, {ws.ok_msgs:,} round trips"
                   f" | {len(ws.failures)}{': ' + ws.failures[0] if ws.failures else ''} |")
        out.append(f"| idle connections | {idle_line}; held for the whole load | |")
        rows = [r for r in self.sampler.rows if r["phase"] == "load"]
        peak = max((r["rss_kib"] for r in rows), default=0)
        out += ["", "| | baseline | peak under load | end |", "|---|---|---|---|",
                f"| RSS MiB | {base['rss_kib'] / 1024:.1f} | {peak / 1024:.1f} | "
                f"{(end or {}).get('rss_kib', 0) / 1024:.1f} |"]
        for key in ("fds", "sockets", "pipes", "other_fds", "threads"):
            pk = max((r[key] for r in rows), default=0)
            out.append(f"| {key} | {base[key]} | {pk} | {(end or {}).get(key, '-')} |")
        out += ["", f"sockets by role at the start {roles_base}, at the end {roles_end}", ""]
        out += [f"## Verdict: {'PASS' if passed else 'FAIL'}", ""] + lines
        errors = {k: r["errors"] for k, r in wrk.items() if r.get("errors")}
        if errors or ws.failures:
            out += ["", f"Client-side errors (not part of the verdict): {errors}"
                        f"{'; websocket: ' + '; '.join(ws.failures[:5]) if ws.failures else ''}"]
        if self.notes:
            out += [""] + [f"Note: {n}" for n in self.notes]
        return "\n".join(out) + "\n"

    def cleanup(self):
        if self.ws is not None:
            self.ws.stop.set()
        if self.sampler is not None and self.sampler.is_alive():
            self.sampler.finish()
        if self.idle is not None:
            self.idle.close()
        self.registry.stop_all()


def output_base(out_dir, mode):
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, f"soak-{datetime.date.today().isoformat()}")
    if mode != "full":
        base += "-" + mode
    elif os.path.exists(base + ".csv"):
        base += datetime.datetime.now().strftime("-%H%M%S")
    return base


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)
    if a.plot:
        return 0 if plot(a.plot[0], a.plot[1]) else 1

    def on_signal(signum, _frame):
        raise Interrupted(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    soak = Soak(a)
    rc = 0
    try:
        rc = 0 if soak.run() else 1
    except Interrupted as e:
        log(f"interrupted by signal {e.args[0]}: stopping everything")
        rc = 130
    except BenchError as e:
        log(f"FAILED: {e}")
        rc = 1
    except SystemExit as e:
        log(str(e))
        rc = 2
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        soak.cleanup()
        if a.keep_tmp or rc != 0:
            log(f"configs and logs kept in {soak.tmp}")
        else:
            shutil.rmtree(soak.tmp, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
