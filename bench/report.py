"""Turns per-repetition measurements into medians and the Markdown report.

Pure functions of the results dictionary (the same one saved as JSON next to the report), so a
report can be regenerated from a saved JSON: `python3 bench/report.py results/X.json`.
"""

import json
import statistics
import sys

QUESTIONS = {
    "http-small": "How many small keep-alive requests per second, and at what proxy CPU cost per request?",
    "http-64k": "Same with a 64 KiB response: how well are bodies streamed?",
    "http-newconn": "What does a new client connection per request cost (accept, parse, close)?",
    "tcp-bulk-up": "Bulk TCP client->server (iperf3): Gbit/s and proxy CPU-seconds per GB moved.",
    "tcp-bulk-down": "Bulk TCP server->client (iperf3 -R): the other direction.",
    "h2c-small": "HTTP/2 with prior knowledge (h2load, 64 connections x 10 streams) to an HTTP/1.1 backend: requests per second and proxy CPU per request (the p50 column is h2load's mean).",
    "idle": "What does an idle connection cost: RSS bytes per connection, threads?",
}

# For the ratios: which nginx / HAProxy candidate ringmesh is compared with, per kind of case.
REFERENCES = {"http": ("nginx-http", "haproxy-http"), "tcp": ("nginx-stream", "haproxy-tcp"),
              "idle": ("nginx-http", "haproxy-http")}


def kind_of(test):
    if test.startswith("http-") or test.startswith("h2c-"):
        return "http"
    if test.startswith("tcp-"):
        return "tcp"
    return "idle"


def _stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def aggregate(entry):
    """Median (and min-max) over the successful repetitions of one case+candidate."""
    reps = [r for r in entry.get("reps", []) if "error" not in r]
    kind = kind_of(entry["test"])
    agg = {"kind": kind, "reps_ok": len(reps)}
    if not reps:
        return agg
    if kind == "http":
        agg["throughput"] = _stats([r.get("rps") for r in reps])
        agg["p50_ms"] = _stats([r.get("p50_ms") for r in reps])
        agg["p99_ms"] = _stats([r.get("p99_ms") for r in reps])
    elif kind == "tcp":
        agg["throughput"] = _stats([r.get("gbps") for r in reps])
    else:
        agg["rss_per_conn"] = _stats([r.get("rss_per_conn_bytes") for r in reps])
        agg["threads"] = _stats([r.get("threads") for r in reps])
        agg["conns"] = _stats([r.get("conns_ok") for r in reps])
    agg["cpu_per_unit"] = _stats([r.get("cpu_per_unit") for r in reps])
    agg["cpu_util"] = _stats([r.get("cpu_util") for r in reps])
    agg["peak_rss_mib"] = _stats([r["peak_rss_kib"] / 1024 if r.get("peak_rss_kib") else None
                                  for r in reps])
    return agg


def _fmt(v, digits):
    if v is None:
        return "—"
    if digits == 0:
        return f"{v:,.0f}"
    return f"{v:,.{digits}f}"


def _fmt_stat(s, digits, unit="", spread=True):
    if not s:
        return "—"
    text = _fmt(s["median"], digits) + unit
    if spread and s["n"] > 1:
        text += f" ({_fmt(s['min'], digits)}–{_fmt(s['max'], digits)})"
    return text


def _notes(entry):
    notes = []
    if entry.get("skipped"):
        notes.append("skipped: " + entry["skipped"])
    elif not entry.get("reps"):
        notes.append("not run")
    errs = [r["error"] for r in entry.get("reps", []) if "error" in r]
    if errs:
        notes.append(f"FAILED {len(errs)}/{len(entry['reps'])}: " + errs[0])
    totals = {}
    for r in entry.get("reps", []):
        for k, v in (r.get("errors") or {}).items():
            totals[k] = totals.get(k, 0) + v
    if totals:
        notes.append("wrk errors: " + ", ".join(f"{k} {v}" for k, v in sorted(totals.items())))
    for r in entry.get("reps", []):
        if r.get("conns_failed"):
            notes.append(f"{r['conns_failed']} idle conns failed")
            break
    notes.extend(sorted(set(entry.get("warnings", []))))
    return "; ".join(notes).replace("|", "/").replace("\n", " ")


def results_table(results):
    lines = [
        "| case | candidate | req/s or Gbit/s: median (min–max) | p50 ms | p99 ms "
        "| proxy CPU: µs/req or s/GB, median (min–max) | proxy CPU util | peak RSS MiB "
        "| RSS B/conn | threads | notes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for e in results:
        a = aggregate(e)
        kind = a["kind"]
        direct = e["candidate"] == "direct"
        if kind == "http":
            thr = _fmt_stat(a.get("throughput"), 0)
            cpu = _fmt_stat(a.get("cpu_per_unit"), 2, " µs/req")
        elif kind == "tcp":
            thr = _fmt_stat(a.get("throughput"), 2, " Gbit/s")
            cpu = _fmt_stat(a.get("cpu_per_unit"), 3, " s/GB")
        else:
            thr, cpu = "—", "—"
        if direct:
            cpu = "— (no proxy)"
        util = a.get("cpu_util")
        util = f"{util['median'] * 100:.0f}%" if util and not direct else "—"
        conns = a.get("conns")
        per_conn = _fmt_stat(a.get("rss_per_conn"), 0)
        if conns and per_conn != "—":
            per_conn += f" ×{conns['median']:.0f}"
        lines.append("| " + " | ".join([
            e["test"], e["candidate"], thr,
            _fmt_stat(a.get("p50_ms"), 3, spread=False),
            _fmt_stat(a.get("p99_ms"), 3, spread=False),
            cpu, util,
            "—" if direct else _fmt_stat(a.get("peak_rss_mib"), 1, spread=False),
            per_conn,
            _fmt_stat(a.get("threads"), 0, spread=False),
            _notes(e),
        ]) + " |")
    return "\n".join(lines)


def _ratio(a, b, key):
    sa, sb = a.get(key), b.get(key)
    if not sa or not sb or not sb["median"]:
        return "—"
    return f"{sa['median'] / sb['median']:.2f}×"


def ratios_table(results):
    """ringmesh divided by nginx and by HAProxy, per case, from this run's medians."""
    by = {(e["test"], e["candidate"]): aggregate(e) for e in results}
    rows = []
    # floor-tcp (bench/relay_floor.c) is ranked like ringmesh's tcp route: what the
    # least possible relay would score against the same peers.
    ours = [c for c in dict.fromkeys(e["candidate"] for e in results)
            if c.startswith("ringmesh") or c == "floor-tcp"]
    for test, cand in ((t, c) for t in dict.fromkeys(e["test"] for e in results) for c in ours):
        rm = by.get((test, cand))
        if not rm or not rm.get("reps_ok"):
            continue
        kind = kind_of(test)
        direct = by.get((test, "direct"))
        # ringmesh's tcp route is compared with the other proxies' tcp modes.
        refs = REFERENCES["tcp"] if cand.split("@")[0] in ("ringmesh-tcp", "floor-tcp") else REFERENCES[kind]
        for ref in refs:
            other = by.get((test, ref))
            if not other or not other.get("reps_ok"):
                continue
            ceiling = "—"
            if direct and direct.get("throughput") and rm.get("throughput"):
                ceiling = f"{rm['throughput']['median'] / direct['throughput']['median'] * 100:.0f}%"
            rows.append("| " + " | ".join([
                test, f"{cand} / {ref}", _ratio(rm, other, "throughput"), _ratio(rm, other, "cpu_per_unit"),
                _ratio(rm, other, "p99_ms"), _ratio(rm, other, "peak_rss_mib"),
                _ratio(rm, other, "rss_per_conn"), ceiling]) + " |")
    if not rows:
        return "(no ringmesh results to compare)"
    head = ["| case | ringmesh / … | throughput (higher is better) | CPU per req or per GB "
            "(lower is better) | p99 | peak RSS | RSS per idle conn | ringmesh throughput "
            "as % of direct |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    return "\n".join(head + rows)


def markdown(doc):
    m, s = doc["machine"], doc["settings"]
    out = [f"# ringmesh benchmark: {doc['date']} on {m.get('hostname')} ({s['mode']} mode)", ""]
    if doc.get("interrupted"):
        out += ["**Interrupted: partial results.**", ""]
    out += ["Questions, method and caveats: see `bench/README.md`. Each figure is the median of "
            f"{s['reps']} repetition(s), min–max in parentheses; every candidate ran with the "
            "same worker count and CPU pinning, taking turns in one run.", "",
            "## Machine", "", "| fact | value |", "|---|---|"]
    for k, v in m.items():
        out.append(f"| {k} | {str(v).replace('|', '/')} |")
    out += ["", "## Settings", "", "| setting | value |", "|---|---|"]
    for k, v in s.items():
        out.append(f"| {k} | {v} |")
    out += ["", "## Results", "", results_table(doc["results"]), "",
            "## ringmesh relative to nginx and HAProxy (same run)", "",
            ratios_table(doc["results"]), ""]
    if doc.get("messages"):
        out += ["## Messages", ""] + [f"- {x}" for x in doc["messages"]] + [""]
    return "\n".join(out)


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        print(markdown(json.load(f)))
