#!/usr/bin/env python3
"""Draw the figures of one bench run (its JSON) as a PNG: one row of panels per case.

Usage: plot.py RESULTS.json OUT.png. Each panel has one bar per candidate (median, with a
min-max error bar when there were several repetitions); ringmesh's bar is highlighted.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True

import report  # noqa: E402

# (figure key in report.aggregate, panel title) per kind of case
PANELS = {
    "http": [("throughput", "req/s"), ("p99_ms", "p99 latency (ms)"),
             ("cpu_per_unit", "proxy CPU µs / request"), ("peak_rss_mib", "peak RSS (MiB)")],
    "tcp": [("throughput", "Gbit/s"), ("cpu_util", "proxy CPU (fraction of a core)"),
            ("cpu_per_unit", "proxy CPU s / GB"), ("peak_rss_mib", "peak RSS (MiB)")],
    "idle": [("rss_per_conn", "RSS bytes / idle conn"), ("threads", "threads"),
             ("peak_rss_mib", "peak RSS (MiB)")],
}
COLORS = {"direct": "#999999", "ringmesh": "#d62728", "nginx-http": "#2ca02c",
          "nginx-stream": "#98df8a", "haproxy-http": "#1f77b4", "haproxy-tcp": "#aec7e8"}


def main():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (apt-get install python3-matplotlib)", file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    out = sys.argv[2]

    tests = list(dict.fromkeys(e["test"] for e in doc["results"]))
    if not tests:
        print("no results to plot", file=sys.stderr)
        return 1
    ncols = max(len(p) for p in PANELS.values())
    fig, axes = plt.subplots(len(tests), ncols, figsize=(4.2 * ncols, 3.0 * len(tests)),
                             squeeze=False)
    for row, test in enumerate(tests):
        kind = report.kind_of(test)
        entries = [e for e in doc["results"] if e["test"] == test]
        aggs = [(e["candidate"], report.aggregate(e)) for e in entries]
        for col in range(ncols):
            ax = axes[row][col]
            if col >= len(PANELS[kind]):
                ax.axis("off")
                continue
            key, title = PANELS[kind][col]
            names, vals, lo, hi, colors = [], [], [], [], []
            for cand, a in aggs:
                st = a.get(key)
                if not st or (cand == "direct" and key not in ("throughput", "p99_ms")):
                    continue
                names.append(cand)
                vals.append(st["median"])
                lo.append(st["median"] - st["min"])
                hi.append(st["max"] - st["median"])
                colors.append(COLORS.get(cand, "#777777"))
            ax.set_title(f"{test}: {title}", fontsize=9)
            if not names:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
                ax.set_xticks([])
                continue
            xs = range(len(names))
            ax.bar(xs, vals, color=colors,
                   yerr=[lo, hi] if any(lo) or any(hi) else None, capsize=3)
            ax.set_xticks(list(xs))
            ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
            ax.tick_params(axis="y", labelsize=8)
            top = max(v + h for v, h in zip(vals, hi))
            for x, v, h in zip(xs, vals, hi):
                ax.text(x, v + h + top * 0.01, _short(v), ha="center", va="bottom", fontsize=7)
            ax.set_ylim(0, top * 1.15 if top > 0 else 1)
    m, s = doc["machine"], doc["settings"]
    fig.suptitle(f"ringmesh bench {doc['date']} on {m.get('hostname')}: {s['mode']} mode, "
                 f"{s['workers']} proxy worker(s) on CPU {m.get('proxy CPUs')}, median of "
                 f"{s['reps']} rep(s) × {s['duration']} s", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(out, dpi=90)
    return 0


def _short(v):
    if v >= 10000:
        return f"{v / 1000:.0f}k"
    if v >= 100:
        return f"{v:.0f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


if __name__ == "__main__":
    sys.exit(main())
