"""Processes the harness starts, and what /proc says about them.

Every process is started pinned (taskset -c), in its own session, recorded in a pid file with its
start time so that bench/run.sh can stop leftovers by PID even if this Python process is killed.
Nothing is ever stopped by name: only PIDs started here and their descendants.
"""

import os
import signal
import subprocess
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """A measurement could not be made; the message says why."""


# ---------------------------------------------------------------------------------------------
# /proc readers

def proc_stat(pid):
    """Fields of /proc/PID/stat we use, or None if the process is gone.

    Field numbers (1-based, man 5 proc): 3 state, 4 ppid, 14 utime, 15 stime, 16 cutime,
    17 cstime, 22 starttime. The comm field may hold spaces and parentheses, so split after
    the last ')'.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    rest = data[data.rindex(")") + 2:].split()
    return {
        "state": rest[0],
        "ppid": int(rest[1]),
        "utime": int(rest[11]),
        "stime": int(rest[12]),
        "cutime": int(rest[13]),
        "cstime": int(rest[14]),
        "starttime": int(rest[19]),
    }


def proc_status(pid):
    """VmRSS, VmHWM (KiB) and Threads from /proc/PID/status, or None if gone."""
    out = {"VmRSS": 0, "VmHWM": 0, "Threads": 0}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, val = line.partition(":")
                if key in out:
                    out[key] = int(val.split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return out


def process_tree(root):
    """root and all its living descendants (found through the ppid of every /proc entry)."""
    if proc_stat(root) is None:
        return []
    children = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        st = proc_stat(int(name))
        if st is not None:
            children.setdefault(st["ppid"], []).append(int(name))
    out, queue = [], [root]
    while queue:
        pid = queue.pop()
        out.append(pid)
        queue.extend(children.get(pid, []))
    return out


def tree_cpu_seconds(root):
    """utime+stime of every process (all threads) in the tree, plus cutime+cstime.

    /proc/PID/stat of a thread-group leader already sums all its threads. cutime/cstime hold
    the CPU of children that exited and were reaped, so a worker that died mid-run still counts
    (while alive it is counted through its own entry, never twice).
    """
    ticks = 0
    for pid in process_tree(root):
        st = proc_stat(pid)
        if st is not None:
            ticks += st["utime"] + st["stime"] + st["cutime"] + st["cstime"]
    return ticks / CLK_TCK


def tree_status(root):
    """Summed VmRSS, VmHWM (KiB) and Threads over the tree, and the number of processes."""
    total = {"VmRSS": 0, "VmHWM": 0, "Threads": 0, "procs": 0}
    for pid in process_tree(root):
        st = proc_status(pid)
        if st is None:
            continue
        for k in ("VmRSS", "VmHWM", "Threads"):
            total[k] += st[k]
        total["procs"] += 1
    return total


class RssSampler(threading.Thread):
    """Samples the summed VmRSS of a process tree every `interval` s; keeps the maximum."""

    def __init__(self, root, interval=0.2):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.max_kib = 0
        self._stop_event = threading.Event()

    def run(self):
        pids, n = [], 0
        while True:
            if n % 10 == 0:
                pids = process_tree(self.root)
            n += 1
            rss = 0
            for pid in pids:
                st = proc_status(pid)
                if st is not None:
                    rss += st["VmRSS"]
            self.max_kib = max(self.max_kib, rss)
            if self._stop_event.wait(self.interval):
                return

    def finish(self):
        self._stop_event.set()
        self.join(timeout=5)
        return self.max_kib


# ---------------------------------------------------------------------------------------------
# Started processes

class Registry:
    """PIDs this harness started, mirrored into a pid file ("pid starttime name" per line)."""

    def __init__(self, pidfile):
        self.pidfile = pidfile
        self.procs = []

    def add(self, proc):
        self.procs.append(proc)
        self._write()

    def remove(self, proc):
        if proc in self.procs:
            self.procs.remove(proc)
            self._write()

    def _write(self):
        if not self.pidfile:
            return
        tmp = self.pidfile + ".tmp"
        with open(tmp, "w") as f:
            for p in self.procs:
                f.write(f"{p.pid} {p.starttime} {p.name}\n")
        os.replace(tmp, self.pidfile)

    def stop_all(self):
        for p in list(reversed(self.procs)):
            p.stop()


def cpu_list(cpus):
    return ",".join(str(c) for c in cpus)


class Managed:
    """A process started pinned with taskset (which execs, so the PID is the program's)."""

    def __init__(self, registry, name, argv, cpus, log_path, env=None, stdin=None, stdout=None):
        self.registry, self.name = registry, name
        self.argv = ["taskset", "-c", cpu_list(cpus)] + list(argv)
        self.log_path = log_path
        self.env, self.stdin, self.stdout = env, stdin, stdout
        self.popen, self.pid, self.starttime = None, None, None

    def start(self):
        log = open(self.log_path, "ab")
        try:
            self.popen = subprocess.Popen(
                self.argv,
                stdin=self.stdin if self.stdin is not None else subprocess.DEVNULL,
                stdout=self.stdout if self.stdout is not None else log,
                stderr=log,
                env=self.env,
                start_new_session=True,
            )
        finally:
            log.close()
        self.pid = self.popen.pid
        st = proc_stat(self.pid)
        self.starttime = st["starttime"] if st else 0
        self.registry.add(self)
        return self

    def alive(self):
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, n=15):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def stop(self, timeout=10.0):
        """SIGTERM, wait up to `timeout`, then SIGKILL; then SIGKILL descendants left behind."""
        if self.popen is None:
            return
        if self.popen.poll() is None:
            tree = [(p, (proc_stat(p) or {}).get("starttime")) for p in process_tree(self.pid)]
            try:
                os.kill(self.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(self.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    self.popen.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
            # Descendants (nginx workers) normally exit with their master; kill stragglers,
            # checking the start time so a recycled PID is never hit.
            deadline = time.monotonic() + 3
            for pid, start in tree[1:]:
                while start is not None and time.monotonic() < deadline:
                    st = proc_stat(pid)
                    if st is None or st["starttime"] != start or st["state"] == "Z":
                        break
                    time.sleep(0.05)
                st = proc_stat(pid)
                if st is not None and start is not None and st["starttime"] == start and st["state"] != "Z":
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        self.registry.remove(self)


def run_cmd(registry, name, argv, cpus, timeout, log_path):
    """Run a short-lived pinned command to completion; returns (rc, stdout, stderr).

    Bounded by `timeout`: on expiry the process is killed and BenchError raised. The PID is in
    the registry (and pid file) while it runs; the output is appended to `log_path`.
    """
    p = Managed(registry, name, argv, cpus, log_path)
    popen = subprocess.Popen(p.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, start_new_session=True)
    p.popen, p.pid = popen, popen.pid
    st = proc_stat(p.pid)
    p.starttime = st["starttime"] if st else 0
    registry.add(p)
    try:
        out, err = popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        popen.kill()
        out, err = popen.communicate(timeout=5)
        _append_log(log_path, p.argv, out, err)
        raise BenchError(f"{name} did not finish within {timeout:.0f} s (killed)")
    finally:
        if popen.poll() is None:
            popen.kill()
            try:
                popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        registry.remove(p)
    out, err = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    _append_log(log_path, p.argv, out, err)
    return popen.returncode, out, err


def _append_log(path, argv, out, err):
    with open(path, "a") as f:
        f.write("$ " + " ".join(argv) + "\n")
        if isinstance(out, bytes):
            out, err = out.decode("utf-8", "replace"), (err or b"").decode("utf-8", "replace")
        f.write(out or "")
        f.write(err or "")
        f.write("\n")
