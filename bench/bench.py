#!/usr/bin/env python3
"""ringmesh side by side with nginx and HAProxy: one run, same workers, same CPU pinning.

Usually started by bench/run.sh (which installs the tools and builds ringmesh). For every
repetition, case and candidate, in turn: start the candidate fresh from a generated config,
check it proxies, warm up, measure (wrk / iperf3 / idle connections), read the proxy's CPU and
memory from /proc, stop it by PID. Then write the Markdown table, a JSON of all figures and a
PNG chart (plot.py). README.md says what each case asks and how each figure is computed.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True   # no __pycache__ in the work tree

import configs  # noqa: E402
import loads  # noqa: E402
import report  # noqa: E402
from procs import (BenchError, Managed, Registry, RssSampler, run_cmd,  # noqa: E402
                   tree_cpu_seconds, tree_status)

REPO = os.path.dirname(HERE)
ALL_CASES = ["http-small", "http-64k", "http-newconn", "h2c-small", "tcp-bulk", "idle"]
# h2c cases: path, concurrent streams per connection (h2load -m).
H2C_CASES = {"h2c-small": ("/small", 10)}
HTTP_PATHS = {"http-small": ("/small", False), "http-64k": ("/64k", False),
              "http-newconn": ("/small", True)}
MODES = {
    #        duration warmup reps conns idle   cases, candidates (None = all)
    "full":  dict(duration=10, warmup=2, reps=3, conns=64, idle=2000, cases=None, candidates=None),
    "quick": dict(duration=3, warmup=1, reps=1, conns=64, idle=1000,
                  cases=["http-small", "http-64k", "http-newconn", "tcp-bulk-up", "idle"],
                  candidates=None),
    "smoke": dict(duration=1, warmup=0, reps=1, conns=16, idle=50,
                  cases=["http-small", "tcp-bulk", "idle"], candidates=["direct", "ringmesh"]),
}


class Interrupted(Exception):
    pass


def log(msg):
    print(msg, flush=True)


def die(msg):
    """A setup error: nothing can be measured. Exit code 2, like a usage error."""
    print("bench.py: " + msg, file=sys.stderr, flush=True)
    raise SystemExit(2)


# ---------------------------------------------------------------------------------------------
# Settings

def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true",
                   help="1 repetition, 3 s runs, tcp-bulk up only, idle 1000 (< 2 min)")
    g.add_argument("--smoke", action="store_true",
                   help="tiniest: 1 s runs, direct+ringmesh, http-small, tcp-bulk, idle 50")
    ap.add_argument("--workers", type=int, default=1, help="proxy workers, on CPUs 0..N-1")
    ap.add_argument("--cases", help="comma list of " + ",".join(ALL_CASES)
                    + " (tcp-bulk-up / tcp-bulk-down pick one direction)")
    ap.add_argument("--candidates", help="comma list of " + ",".join(configs.CANDIDATES))
    ap.add_argument("--duration", type=int, help="seconds per measured run")
    ap.add_argument("--warmup", type=int, help="seconds of warm-up before each measured run")
    ap.add_argument("--reps", type=int, help="repetitions (median reported)")
    ap.add_argument("--connections", type=int, help="wrk connections")
    ap.add_argument("--idle-conns", type=int, help="connections held open in the idle case")
    ap.add_argument("--idle-mode", choices=["request", "connect"], default="request",
                    help="idle connections first do one GET (default) or only connect")
    ap.add_argument("--tcp-http", action="store_true",
                    help="also run the HTTP cases through the TCP-mode proxies")
    ap.add_argument("--ringmesh-bin", default=os.environ.get("RINGMESH_BIN"),
                    help="ringmesh binary (default $CARGO_TARGET_DIR or target/, release)")
    ap.add_argument("--ringmesh-base", default=None,
                    help="a second ringmesh binary (the 'before' of an A/B): every ringmesh "
                         "candidate also runs from it as '<name>@base', in turn with the others")
    ap.add_argument("--out-dir", default=os.path.join(HERE, "results"))
    ap.add_argument("--max-time", type=float, help="overall time budget in seconds")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--keep-tmp", action="store_true", help="keep generated configs and logs")
    ap.add_argument("--allow-failures", action="store_true",
                    help="exit 0 even if a measurement failed")
    return ap.parse_args(argv)


def build_settings(a):
    mode = "smoke" if a.smoke else "quick" if a.quick else "full"
    d = MODES[mode]
    s = {
        "mode": mode,
        "duration": a.duration or d["duration"],
        "warmup": d["warmup"] if a.warmup is None else a.warmup,
        "reps": a.reps or d["reps"],
        "conns": a.connections or d["conns"],
        "idle_conns": a.idle_conns or d["idle"],
        "idle_mode": a.idle_mode,
        "workers": a.workers,
        "tcp_http": a.tcp_http,
    }
    cases = a.cases.split(",") if a.cases else (d["cases"] or ALL_CASES)
    known = ALL_CASES + ["tcp-bulk-up", "tcp-bulk-down"]
    bad = [c for c in cases if c not in known]
    if bad:
        die(f"unknown case(s) {bad}; known: {known}")
    cands = a.candidates.split(",") if a.candidates else (
        d["candidates"] or [c for c in configs.CANDIDATES if c not in configs.VARIANTS])
    if a.ringmesh_base:
        cands = [x for c in cands for x in
                 ([c + "@base", c] if c.startswith("ringmesh") and "@" not in c else [c])]
    bad = [c for c in cands if configs.base_name(c) not in configs.CANDIDATES
           or (c.endswith("@base") and not a.ringmesh_base)]
    if bad:
        die(f"unknown candidate(s) {bad}; known: {list(configs.CANDIDATES)}")
    s["cases"], s["candidates"] = cases, cands
    if s["duration"] < 1 or s["reps"] < 1 or s["workers"] < 1 or s["conns"] < 1:
        die("--duration, --reps, --workers and --connections must be >= 1")
    return s


def plan_tests(cases):
    """Case names as run: tcp-bulk becomes its two directions."""
    tests = []
    for c in cases:
        if c == "tcp-bulk":
            tests += ["tcp-bulk-up", "tcp-bulk-down"]
        elif c not in tests:
            tests.append(c)
    return list(dict.fromkeys(tests))


def applies(test, cand, tcp_http):
    modes = configs.CANDIDATES[configs.base_name(cand)]["modes"]
    if test.startswith("h2c-"):
        return bool(configs.CANDIDATES[configs.base_name(cand)].get("h2c_port"))
    if test.startswith("http-"):
        return "http" in modes or (tcp_http and bool({"tcp", "tcp-http"} & modes))
    if test.startswith("tcp-"):
        return "tcp" in modes
    return cand not in ("direct", "floor-tcp")   # idle: through a proxy (the floor holds no state worth counting)


def cpu_layout(workers):
    allowed = sorted(os.sched_getaffinity(0))
    if workers > len(allowed):
        die(f"--workers {workers} but only {len(allowed)} CPUs are allowed")
    proxy = allowed[:workers]
    load = allowed[workers:]
    shared = not load
    if shared:
        load = [allowed[-1]]
    return proxy, load, shared


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65535 if hard == resource.RLIM_INFINITY else min(65535, hard)
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# ---------------------------------------------------------------------------------------------
# Machine facts

def _cmd_text(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (r.stdout + r.stderr).strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _first(text, pattern):
    m = re.search(pattern, text)
    return m.group(1) if m else (text.splitlines()[0] if text else "not found")


def machine_facts(ringmesh_bin, proxy_cpus, load_cpus, shared):
    facts = {"hostname": socket.gethostname(), "nproc": os.cpu_count(),
             "allowed CPUs": len(os.sched_getaffinity(0)), "kernel": platform.release()}
    try:
        with open("/proc/cpuinfo") as f:
            facts["cpu"] = _first(f.read(), r"model name\s*:\s*(.+)")
    except OSError:
        pass
    try:
        with open("/etc/os-release") as f:
            facts["os"] = _first(f.read(), r'PRETTY_NAME="?([^"\n]+)')
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as f:
            kib = int(_first(f.read(), r"MemTotal:\s*(\d+)"))
            facts["memory"] = f"{kib / 1048576:.1f} GiB"
    except (OSError, ValueError):
        pass
    facts["nginx"] = _first(_cmd_text(["nginx", "-v"]), r"nginx/(\S+)")
    facts["haproxy"] = _first(_cmd_text(["haproxy", "-v"]), r"version (\S+)")
    facts["wrk"] = _first(_cmd_text(["wrk", "-v"]), r"wrk (\S+)")
    facts["iperf3"] = _first(_cmd_text(["iperf3", "-v"]), r"iperf (\S+)")
    if ringmesh_bin and os.access(ringmesh_bin, os.X_OK):
        v = _cmd_text([ringmesh_bin, "--version"])
        facts["ringmesh"] = v.splitlines()[0] if v and "error" not in v.lower() else "(no --version)"
    else:
        facts["ringmesh"] = "not built"
    rev = _cmd_text(["git", "-C", REPO, "rev-parse", "--short", "HEAD"])
    if re.fullmatch(r"[0-9a-f]{4,40}", rev or ""):
        dirty = _cmd_text(["git", "-C", REPO, "status", "--porcelain", "--", "src", "Cargo.toml"])
        facts["ringmesh commit"] = rev + (" (+ uncommitted changes)" if dirty else "")
    facts["proxy CPUs"] = ",".join(map(str, proxy_cpus))
    facts["load CPUs (wrk/iperf3 + backend)"] = ",".join(map(str, load_cpus)) + (
        " (SHARED with the proxy: no free CPU left)" if shared else "")
    try:
        with open("/proc/loadavg") as f:
            facts["loadavg at start"] = " ".join(f.read().split()[:3])
    except OSError:
        pass
    try:
        with open("/proc/sys/net/ipv4/tcp_tw_reuse") as f:
            facts["tcp_tw_reuse"] = f.read().strip()
    except OSError:
        pass
    return facts


# ---------------------------------------------------------------------------------------------
# The bench

class Bench:
    def __init__(self, args, s):
        self.args, self.s = args, s
        self.proxy_cpus, self.load_cpus, self.shared = cpu_layout(s["workers"])
        self.nofile = raise_nofile()
        self.tmp = tempfile.mkdtemp(prefix="ringmesh-bench-")
        os.chmod(self.tmp, 0o755)   # nginx workers (user nobody) read the backend's files
        self.registry = Registry(os.environ.get("BENCH_PIDFILE") or os.path.join(self.tmp, "pids"))
        self.backend = None
        self.iperf = None
        self.messages = []
        self.skip = {}      # candidate or tool -> reason
        self.failed = False
        self.ringmesh_bin = args.ringmesh_bin or os.path.join(
            os.environ.get("CARGO_TARGET_DIR") or os.path.join(REPO, "target"), "release", "ringmesh")
        if not os.path.isabs(self.ringmesh_bin):
            self.ringmesh_bin = os.path.abspath(self.ringmesh_bin)
        self.ringmesh_base = os.path.abspath(args.ringmesh_base) if args.ringmesh_base else None

    def note(self, msg):
        log("NOTE: " + msg)
        self.messages.append(msg)

    # -- availability ------------------------------------------------------------------------

    def check_tools(self, tests):
        have = {t: shutil.which(t) is not None for t in ("nginx", "haproxy", "wrk", "iperf3", "taskset")}
        if not have["taskset"]:
            die("taskset (util-linux) is missing")
        need_cands = set(self.s["candidates"])
        for c in need_cands:
            if c.startswith("ringmesh") and not c.endswith("@base") \
                    and not os.access(self.ringmesh_bin, os.X_OK):
                self.skip[c] = (f"ringmesh binary not found at {self.ringmesh_bin} (not built "
                                "yet? run without --no-build, or pass --ringmesh-bin)")
            if c.endswith("@base") and not os.access(self.ringmesh_base or "", os.X_OK):
                self.skip[c] = f"--ringmesh-base binary not found at {self.ringmesh_base}"
        for c in ("nginx-http", "nginx-stream", "nginx-log", "nginx-mw"):
            if c in need_cands and not have["nginx"]:
                self.skip[c] = "nginx not installed"
        if "nginx-stream" in need_cands and have["nginx"] and configs.nginx_stream_module() is None:
            self.skip["nginx-stream"] = "nginx stream module missing (apt-get install libnginx-mod-stream)"
        for c in ("haproxy-http", "haproxy-tcp"):
            if c in need_cands and not have["haproxy"]:
                self.skip[c] = "haproxy not installed"
        if not have["nginx"]:
            self.skip["case:http"] = "nginx (the backend) not installed"
        elif not have["wrk"]:
            self.skip["case:http"] = "wrk not installed"
        if not have["iperf3"]:
            self.skip["case:tcp"] = "iperf3 not installed"
        if shutil.which("h2load") is None:
            self.skip["h2load"] = "h2load not installed (apt-get install nghttp2-client)"
        if not have["nginx"]:
            self.skip["case:idle"] = "nginx (the backend) not installed"
        for reason in self.skip.values():
            self.note("skipping: " + reason)

    def skip_reason(self, test, cand):
        kind = report.kind_of(test)
        if test.startswith("h2c-") and "h2load" in self.skip:
            return self.skip["h2load"]
        return self.skip.get("case:" + kind) or self.skip.get(cand)

    def check_ports(self):
        busy = [p for p in configs.all_ports() if not loads.port_free(p)]
        if busy:
            die(f"ports already in use on 127.0.0.1: {busy} "
                "(another benchmark or ringmesh still running?)")

    # -- shared servers --------------------------------------------------------------------------

    def ensure_backend(self):
        if self.backend and self.backend.alive():
            return
        if self.backend:
            self.note("backend nginx had exited; restarting it:\n" + self.backend.log_tail())
            self.backend.stop()
        d = os.path.join(self.tmp, "backend")
        os.makedirs(d, exist_ok=True)
        argv = configs.write_backend(d, self.load_cpus, self.nofile)
        self.backend = Managed(self.registry, "backend-nginx", argv, self.load_cpus,
                               os.path.join(d, "stdout.log")).start()
        if not loads.wait_port(configs.BACKEND_PORT, 10, self.backend.alive):
            raise BenchError("backend nginx did not start: " + self.backend.log_tail()
                             + _read_tail(os.path.join(d, "error.log")))
        err, _ = loads.probe_http(configs.BACKEND_PORT, configs.SMALL_BODY, configs.BIG_BODY)
        if err:
            raise BenchError("backend nginx answers wrongly: " + err)

    def ensure_iperf(self, restart=False):
        if self.iperf and self.iperf.alive() and not restart:
            return
        if self.iperf:
            self.iperf.stop()
        d = os.path.join(self.tmp, "iperf3")
        os.makedirs(d, exist_ok=True)
        argv = ["iperf3", "-s", "-B", configs.HOST, "-p", str(configs.IPERF_PORT),
                "--idle-timeout", "60", "--rcv-timeout", "10000"]
        self.iperf = Managed(self.registry, "iperf3-server", argv, self.load_cpus,
                             os.path.join(d, "server.log")).start()
        if not loads.wait_port(configs.IPERF_PORT, 10, self.iperf.alive):
            raise BenchError("iperf3 server did not start: " + self.iperf.log_tail())

    # -- one candidate ---------------------------------------------------------------------------

    def start_candidate(self, cand, tag):
        """Start a fresh candidate; None for direct. Waits until all its ports accept."""
        if cand == "direct":
            return None
        d = os.path.join(self.tmp, f"{cand}-{tag}")
        os.makedirs(d, exist_ok=True)
        os.chmod(d, 0o755)
        binary = self.ringmesh_base if cand.endswith("@base") else self.ringmesh_bin
        argv = configs.write_candidate(cand, d, self.proxy_cpus, self.nofile, binary)
        env = dict(os.environ)
        env.setdefault("RINGMESH_LOG", "warn")
        p = Managed(self.registry, cand, argv, self.proxy_cpus, os.path.join(d, "output.log"),
                    env=env).start()
        c = configs.CANDIDATES[configs.base_name(cand)]
        for port in (c["http_port"], c["tcp_port"], c.get("h2c_port")):
            if port and not loads.wait_port(port, 15, p.alive):
                tail = p.log_tail() + _read_tail(os.path.join(d, "error.log"))
                alive = p.alive()
                p.stop()
                raise BenchError(f"{cand} {'is not listening on' if alive else 'exited before listening on'}"
                                 f" port {port}: {tail.strip()[-600:]}")
        return p

    def measure(self, test, cand, tag):
        """One repetition of one case for one candidate; returns the figures."""
        proxy = self.start_candidate(cand, tag)
        died = None
        try:
            if test == "idle":
                r = self.measure_idle(cand, proxy)
            else:
                r = self.measure_load(test, cand, proxy)
        finally:
            if proxy is not None:
                if not proxy.alive():
                    died = f"{cand} exited during the run: {proxy.log_tail().strip()[-600:]}"
                proxy.stop()
        if died:
            raise BenchError(died)
        return r

    def _load_run(self, test, cand, duration, log_name):
        c = configs.CANDIDATES[configs.base_name(cand)]
        logf = os.path.join(self.tmp, log_name)
        if test.startswith("h2c-"):
            path, streams = H2C_CASES[test]
            argv = loads.h2load_argv(c["h2c_port"], path, duration, self.s["conns"], streams,
                                     len(self.load_cpus))
            rc, out, err = run_cmd(self.registry, "h2load", argv, self.load_cpus, duration + 30, logf)
            if rc != 0:
                raise BenchError(f"h2load exited {rc}: {(err or out).strip()[-300:]}")
            return loads.parse_h2load(out)
        if test.startswith("http-"):
            path, close = HTTP_PATHS[test]
            argv = loads.wrk_argv(c["http_port"], path, close, duration, self.s["conns"],
                                  len(self.load_cpus))
            rc, out, err = run_cmd(self.registry, "wrk", argv, self.load_cpus, duration + 30, logf)
            if rc != 0:
                raise BenchError(f"wrk exited {rc}: {(err or out).strip()[-300:]}")
            return loads.parse_wrk(out)
        argv = loads.iperf3_argv(c["tcp_port"], test == "tcp-bulk-down", duration)
        rc, out, err = run_cmd(self.registry, "iperf3", argv, self.load_cpus, duration + 30, logf)
        return loads.parse_iperf3(out)

    def measure_load(self, test, cand, proxy):
        c = configs.CANDIDATES[configs.base_name(cand)]
        warnings = []
        if test.startswith("http-"):
            err, warnings = loads.probe_http(c["http_port"], configs.SMALL_BODY, configs.BIG_BODY)
            if err:
                raise BenchError(err)
            if test != "http-newconn":
                warnings = []
        logname = f"load-{test}-{cand}.log"
        if self.s["warmup"] > 0:
            self._load_run(test, cand, self.s["warmup"], logname)
        sampler = None
        if proxy is not None:
            cpu0 = tree_cpu_seconds(proxy.pid)
            sampler = RssSampler(proxy.pid)
            sampler.start()
        t0 = time.monotonic()
        try:
            r = self._load_run(test, cand, self.s["duration"], logname)
        finally:
            wall = time.monotonic() - t0
            if sampler is not None:
                sampled = sampler.finish()
        r["warnings"] = warnings + r.get("warnings", [])
        if proxy is None:
            return r
        cpu = tree_cpu_seconds(proxy.pid) - cpu0
        st = tree_status(proxy.pid)
        r.update(cpu_s=cpu, cpu_util=cpu / wall if wall > 0 else None,
                 peak_rss_kib=st["VmHWM"], sampled_max_rss_kib=sampled,
                 threads=st["Threads"], procs=st["procs"])
        if test.startswith("http-") or test.startswith("h2c-"):
            r["cpu_per_unit"] = cpu * 1e6 / r["requests"] if r["requests"] else None
            if not r["requests"]:
                raise BenchError("no request completed")
        else:
            r["cpu_per_unit"] = cpu / (r["bytes"] / 1e9) if r["bytes"] else None
        return r

    def measure_idle(self, cand, proxy):
        c = configs.CANDIDATES[configs.base_name(cand)]
        err, _ = loads.probe_http(c["http_port"], configs.SMALL_BODY, configs.BIG_BODY)
        if err:
            raise BenchError(err)
        n = self.s["idle_conns"]
        limit = self.nofile - 64
        if n > limit:
            self.note(f"idle: {n} connections exceed the open-file limit; using {limit}")
            n = limit
        time.sleep(0.3)
        before = tree_status(proxy.pid)
        argv = [sys.executable, os.path.join(HERE, "idle_conns.py"), str(c["http_port"]), str(n),
                "--request", "/small" if self.s["idle_mode"] == "request" else "",
                "--hold", "120", "--open-timeout", "90"]
        client = Managed(self.registry, "idle-client", argv, self.load_cpus,
                         os.path.join(self.tmp, f"idle-{cand}.log"),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE).start()
        try:
            line = _read_line(client.popen.stdout, 100)
            m = re.match(r"READY ok=(\d+) failed=(\d+) seconds=([\d.]+)(?: first_error=(.*))?", line or "")
            if not m:
                raise BenchError(f"idle client did not report READY: {line!r} "
                                 + client.log_tail().strip()[-300:])
            ok, failed = int(m.group(1)), int(m.group(2))
            if ok == 0:
                raise BenchError(f"no idle connection could be opened: {m.group(4)}")
            time.sleep(1.0)   # let the proxy settle (lazy allocations, timers)
            samples = []
            for _ in range(3):
                samples.append(tree_status(proxy.pid))
                time.sleep(0.3)
            after = max(samples, key=lambda x: x["VmRSS"])
            if not proxy.alive():
                raise BenchError(f"{cand} exited with {ok} idle connections open")
        finally:
            try:
                client.popen.stdin.close()
            except OSError:
                pass
            client.stop(timeout=15)
        return {"conns_ok": ok, "conns_failed": failed, "open_seconds": float(m.group(3)),
                "rss_before_kib": before["VmRSS"], "rss_after_kib": after["VmRSS"],
                "rss_per_conn_bytes": (after["VmRSS"] - before["VmRSS"]) * 1024 / ok,
                "threads": after["Threads"], "procs": after["procs"],
                "peak_rss_kib": after["VmHWM"],
                "warnings": [f"{failed} of {n} connections failed: {m.group(4)}"] if failed else []}

    # -- the run ---------------------------------------------------------------------------------

    def estimate(self, jobs):
        per = {"idle": 4.0 + self.s["idle_conns"] / 2000.0}
        total = 0.0
        for test, cand in jobs:
            total += per.get(test, self.s["duration"] + self.s["warmup"] + 1.0)
        return total * self.s["reps"]

    def run(self):
        s = self.s
        tests = plan_tests(s["cases"])
        self.check_tools(tests)
        self.check_ports()
        jobs = [(t, c) for t in tests for c in s["candidates"] if applies(t, c, s["tcp_http"])]
        for t in tests:
            if not any(tt == t for tt, _ in jobs):
                self.note(f"case {t}: none of the chosen candidates applies")
        self.entries = {(t, c): {"test": t, "candidate": c, "reps": [], "warnings": []} for t, c in jobs}
        for (t, c), e in self.entries.items():
            reason = self.skip_reason(t, c)
            if reason:
                e["skipped"] = reason
        runnable = [(t, c) for (t, c) in jobs if not self.entries[(t, c)].get("skipped")]
        est = self.estimate(runnable)
        budget = self.args.max_time or max(120.0, est * 1.5 + 60)
        self.deadline = time.monotonic() + budget
        log(f"ringmesh bench ({s['mode']}): {len(runnable)} case×candidate pairs × {s['reps']} "
            f"rep(s), about {est / 60:.1f} min (budget {budget / 60:.1f} min); proxy CPUs "
            f"{self.proxy_cpus}, load CPUs {self.load_cpus}; work dir {self.tmp}")
        if self.shared:
            self.note("no CPU left for the load generator: it shares the proxy's CPUs")
        if any(report.kind_of(t) in ("http", "idle") for t, _ in runnable):
            self.ensure_backend()
        if any(t.startswith("tcp-") for t, _ in runnable):
            self.ensure_iperf()
        for rep in range(s["reps"]):
            for test in tests:
                for cand in s["candidates"]:
                    if (test, cand) not in self.entries or (test, cand) not in runnable:
                        continue
                    e = self.entries[(test, cand)]
                    need = self.estimate([(test, cand)]) / s["reps"]
                    if time.monotonic() + need > self.deadline:
                        e.setdefault("warnings", []).append("time budget exhausted")
                        continue
                    self.one(e, test, cand, rep)

    def one(self, e, test, cand, rep):
        label = f"[{rep + 1}/{self.s['reps']}] {test:<14} {cand:<13}"
        try:
            if report.kind_of(test) in ("http", "idle"):
                self.ensure_backend()
            else:
                self.ensure_iperf()
            try:
                r = self.measure(test, cand, f"{test}-r{rep}")
            except BenchError as ex:
                if not test.startswith("tcp-"):
                    raise
                # A failed iperf3 test can leave its server busy: restart it, retry once.
                log(f"{label} iperf3 failed ({ex}); restarting its server, retrying once")
                self.ensure_iperf(restart=True)
                r = self.measure(test, cand, f"{test}-r{rep}b")
                r.setdefault("warnings", []).append("needed a second attempt: " + str(ex))
        except BenchError as ex:
            self.failed = True
            msg = str(ex).replace("\n", " ")
            e["reps"].append({"error": msg})
            log(f"{label} FAILED: {msg}")
            return
        e["warnings"].extend(r.pop("warnings", []))
        e["reps"].append(r)
        log(label + " " + _summary(test, r))

    def document(self, facts, interrupted):
        s = dict(self.s)
        s["cases"] = ",".join(s["cases"])
        s["candidates"] = ",".join(s["candidates"])
        s["wrk threads"] = len(self.load_cpus)
        s["open-file limit"] = self.nofile
        results = [e for e in getattr(self, "entries", {}).values()]
        try:
            with open("/proc/loadavg") as f:
                facts["loadavg at end"] = " ".join(f.read().split()[:3])
        except OSError:
            pass
        return {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
                "machine": facts, "settings": s, "results": results,
                "messages": self.messages, "interrupted": interrupted}


def _summary(test, r):
    kind = report.kind_of(test)
    cpu = r.get("cpu_per_unit")
    if kind == "http":
        text = f"{r['rps']:>10,.0f} req/s  p50 {r.get('p50_ms', 0):.3f} ms  p99 {r.get('p99_ms', 0):.3f} ms"
        if cpu is not None:
            text += f"  CPU {cpu:.2f} µs/req ({r['cpu_util'] * 100:.0f}%)"
    elif kind == "tcp":
        text = f"{r['gbps']:>8.2f} Gbit/s"
        if cpu is not None:
            text += f"  CPU {cpu:.3f} s/GB ({r['cpu_util'] * 100:.0f}%)"
    else:
        text = (f"{r['conns_ok']} conns: {r['rss_per_conn_bytes']:,.0f} B/conn, "
                f"{r['threads']} threads")
    if r.get("peak_rss_kib"):
        text += f"  peak RSS {r['peak_rss_kib'] / 1024:.1f} MiB"
    if r.get("errors"):
        text += f"  errors {r['errors']}"
    return text


def _read_line(stream, timeout):
    """One line from a pipe within `timeout` seconds, or None."""
    deadline = time.monotonic() + timeout
    buf = b""
    fd = stream.fileno()
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], min(1.0, deadline - time.monotonic()))
        if r:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
            if b"\n" in buf:
                return buf.split(b"\n", 1)[0].decode("utf-8", "replace")
    return buf.decode("utf-8", "replace") or None


def _read_tail(path, n=10):
    try:
        with open(path, "rb") as f:
            return "\n" + "\n".join(f.read().decode("utf-8", "replace").splitlines()[-n:])
    except OSError:
        return ""


def output_paths(out_dir, mode):
    os.makedirs(out_dir, exist_ok=True)
    base = f"{datetime.date.today().isoformat()}-{socket.gethostname()}"
    if mode != "full":
        base += "-" + mode
    elif os.path.exists(os.path.join(out_dir, base + ".md")):
        base += datetime.datetime.now().strftime("-%H%M%S")
    return os.path.join(out_dir, base)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    s = build_settings(args)

    def on_signal(signum, _frame):
        raise Interrupted(signum)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    bench = Bench(args, s)
    facts = machine_facts(bench.ringmesh_bin, bench.proxy_cpus, bench.load_cpus, bench.shared)
    # The harness itself (samplers, probes) runs on the load CPUs, never on the proxy's.
    os.sched_setaffinity(0, bench.load_cpus)
    interrupted = False
    try:
        bench.run()
    except SystemExit:
        # A setup error (ports busy, no taskset, ...): nothing measured, nothing to report.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        bench.registry.stop_all()
        shutil.rmtree(bench.tmp, ignore_errors=True)
        raise
    except Interrupted as ex:
        interrupted = True
        log(f"interrupted by signal {ex.args[0]}: stopping everything, writing partial results")
    except BenchError as ex:
        bench.failed = True
        bench.note(f"aborted: {ex}")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        bench.registry.stop_all()

    doc = bench.document(facts, interrupted)
    base = output_paths(args.out_dir, s["mode"])
    md = report.markdown(doc)
    with open(base + ".md", "w") as f:
        f.write(md)
    with open(base + ".json", "w") as f:
        json.dump(doc, f, indent=1, default=str)
    log("\n" + md)
    log(f"written: {base}.md, {base}.json")
    if not args.no_plot:
        try:
            r = subprocess.run([sys.executable, os.path.join(HERE, "plot.py"), base + ".json",
                                base + ".png"], capture_output=True, text=True, timeout=120)
            if r.returncode == 0:
                log(f"written: {base}.png")
            else:
                log("chart not drawn: " + (r.stderr or r.stdout).strip().splitlines()[-1])
        except (OSError, subprocess.TimeoutExpired, IndexError) as ex:
            log(f"chart not drawn: {ex!r}")
    if args.keep_tmp or bench.failed:
        log(f"configs and logs kept in {bench.tmp}")
    else:
        shutil.rmtree(bench.tmp, ignore_errors=True)
    if interrupted:
        return 130
    if bench.failed and not args.allow_failures:
        log("some measurements FAILED (see notes); exit 1 (--allow-failures to exit 0)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
