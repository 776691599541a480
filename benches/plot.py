"""Plots of one `loanflow bench --json` sitting.

    python benches/plot.py BENCH_JSON [--out-dir DIR]     (benches/plot.sh makes the venv)

Writes two PNGs into DIR (default: the JSON's directory):

- throughput.png: the pipeline's records/s (median, whiskers min..max) vs
  workers, file → file (and Kafka → Kafka when the sitting had a broker),
  with the limits measured in the same sitting as reference lines: the
  scorer alone on as many threads, the Kafka passthrough, and the plain file
  copy (written as a note when it is far above the rest).
- latency.png: latency p50 and p99 (ms) vs offered load as a percentage of
  the max records/s of the same worker count, one colour per worker count,
  with the p99 target (`--p99-target-ms`) as a horizontal line.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def thousands(v: float, _pos=None) -> str:
    if v >= 1e6:
        return f"{v / 1e6:.3g} M" if v < 1e7 else f"{v / 1e6:.0f} M"
    if v >= 1e3:
        return f"{v / 1e3:.0f} k"
    return f"{v:.0f}"


def subtitle(report: dict) -> str:
    m = report.get("machine", {})
    cpu = m.get("cpu") or "unknown CPU"
    return f"{report['rows']:,} records · {m.get('cores', '?')} cores · {cpu}"


def by_kind(items: list[dict], kind: str) -> list[dict]:
    return sorted((i for i in items if i["kind"] == kind), key=lambda i: i["workers"])


def throughput(report: dict, path: str) -> None:
    confs, limits = report["configurations"], report["limits"]
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    shown = []   # every value drawn, for the y range
    series = [("file", "file → file (pipeline)", COLOURS[0], "o"),
              ("kafka", "Kafka → Kafka (pipeline)", COLOURS[1], "s")]
    for kind, label, colour, marker in series:
        rows = by_kind(confs, kind)
        if not rows:
            continue
        w = [r["workers"] for r in rows]
        med = [r["records_per_s"]["median"] for r in rows]
        lo = [r["records_per_s"]["median"] - r["records_per_s"]["min"] for r in rows]
        hi = [r["records_per_s"]["max"] - r["records_per_s"]["median"] for r in rows]
        ax.errorbar(w, med, yerr=[lo, hi], label=label, color=colour, marker=marker,
                    linewidth=2, capsize=4)
        for x, y in zip(w, med):
            ax.annotate(thousands(y), (x, y), textcoords="offset points", xytext=(6, -12),
                        fontsize=8, color=colour)
        shown += [r["records_per_s"]["max"] for r in rows]
    refs = [("scorer", "limit: scorer alone (same threads)", COLOURS[2]),
            ("kafka_passthrough", "limit: Kafka passthrough", COLOURS[3])]
    for kind, label, colour in refs:
        rows = by_kind(limits, kind)
        if not rows:
            continue
        w = [r["workers"] for r in rows]
        med = [r["records_per_s"]["median"] for r in rows]
        ax.plot(w, med, linestyle="--", marker="x", color=colour, label=label)
        shown += med
    top = 1.15 * max(shown) if shown else 1.0
    for copy in by_kind(limits, "file_copy"):
        rate = copy["records_per_s"]["median"]
        label = f"limit: file copy (read + write), {thousands(rate)} records/s"
        if rate <= top * 1.5:
            ax.axhline(rate, linestyle=":", color="grey", label=label)
            top = max(top, 1.1 * rate)
        else:
            ax.plot([], [], linestyle=":", color="grey", label=label + " (off the chart)")
    workers = sorted({r["workers"] for r in confs + limits if r["kind"] != "file_copy"})
    ax.set_xticks(workers)
    if workers:
        ax.set_xlim(min(workers) - 0.3, max(workers) + 0.3)
    ax.set_ylim(0, top)
    ax.yaxis.set_major_formatter(FuncFormatter(thousands))
    ax.set_xlabel("workers (threads)")
    ax.set_ylabel("records/s (median; whiskers: min–max)")
    ax.set_title("loanflow: records/s vs workers, next to its limits\n" + subtitle(report),
                 fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best", framealpha=0.85)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def latency(report: dict, path: str) -> bool:
    load = report.get("load") or []
    if not load:
        print("plot: the sitting has no --rate runs: no latency plot", file=sys.stderr)
        return False
    target = report.get("p99_target", {}).get("target_ms")
    fig, ax = plt.subplots(figsize=(7.5, 4.8), dpi=120)
    values = []
    for i, w in enumerate(sorted({p["workers"] for p in load})):
        points = sorted((p for p in load if p["workers"] == w and p.get("latency_ms")),
                        key=lambda p: p["offered_percent_of_max"])
        if not points:
            continue
        colour = COLOURS[i % len(COLOURS)]
        x = [p["offered_percent_of_max"] for p in points]
        p50 = [p["latency_ms"]["p50"] for p in points]
        p99 = [p["latency_ms"]["p99"] for p in points]
        max_rate = points[0]["max_records_per_s"]
        ax.plot(x, p99, color=colour, marker="o", linewidth=2,
                label=f"-w {w} p99 (max {thousands(max_rate)} records/s)")
        ax.plot(x, p50, color=colour, marker=".", linestyle="--", label=f"-w {w} p50")
        values += p50 + p99
    if target:
        ax.axhline(target, color="black", linestyle=":", label=f"p99 target {target:g} ms")
        values.append(target)
    for r in report.get("p99_target", {}).get("results", []):
        verdict = "met" if r["met"] else "missed"
        ax.annotate(f"-w {r['workers']}: {r['p99_ms']:.1f} ms, {verdict}",
                    (report["p99_target"]["load_percent_of_max"], r["p99_ms"]),
                    textcoords="offset points", xytext=(8, 6), fontsize=8)
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 30:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    else:
        ax.set_ylim(bottom=0)
    ax.set_xlabel("offered load (% of the max records/s with as many workers)")
    ax.set_ylabel("latency, ms (source read due → sink write)")
    ax.set_title("loanflow file → file: latency vs offered load\n" + subtitle(report),
                 fontsize=10)
    ax.set_xlim(0, max(100, max(p["offered_percent_of_max"] for p in load)) + 5)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best", framealpha=0.85)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json", help="the file of loanflow bench --json")
    ap.add_argument("--out-dir", help="where the PNGs go (default: the JSON's directory)")
    args = ap.parse_args()
    with open(args.json, encoding="utf-8") as f:
        report = json.load(f)
    out = args.out_dir or os.path.dirname(os.path.abspath(args.json))
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "throughput.png")
    throughput(report, path)
    print(path)
    path = os.path.join(out, "latency.png")
    if latency(report, path):
        print(path)


if __name__ == "__main__":
    main()
