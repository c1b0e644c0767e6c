#!/usr/bin/env python3
"""Summarises a loadtest/bench output folder: medians over runs per workload and target,
takgate/nginx ratios, and p99 latency added over direct. Prints Markdown; writes summary.json."""
import json
import os
import statistics
import sys

out = sys.argv[1]
runs = os.path.join(out, "runs")

def get(r, path):
    for k in path.split("."):
        if r is None:
            return None
        r = r.get(k)
    return r

METRICS = [
    ("ops/s", "ops.received_per_s"),
    ("MB/s", "bytes.received_mb_per_s"),
    ("p50 ms", "latency.p50_ms"),
    ("p99 ms", "latency.p99_ms"),
    ("p99.9 ms", "latency.p99_9_ms"),
    ("sent p99 ms", "service.p99_ms"),
    ("handshakes/s", "connections.handshakes_per_s"),
    ("open", "connections.open_at_end"),
    ("KiB/conn", "server_rss.per_connection_kib"),
    ("errors", "errors_total"),
]

summary = {}
for workload in sorted(os.listdir(runs)) if os.path.isdir(runs) else []:
    per_target = {}
    for f in sorted(os.listdir(os.path.join(runs, workload))):
        if not f.endswith(".json"):
            continue
        target = f.rsplit("-", 1)[0]
        per_target.setdefault(target, []).append(json.load(open(os.path.join(runs, workload, f))))
    summary[workload] = {}
    for target, reports in per_target.items():
        med = {}
        for name, path in METRICS:
            vals = [v for v in (get(r, path) for r in reports) if v is not None]
            med[name] = round(statistics.median(vals), 3) if vals else None
        med["runs"] = len(reports)
        summary[workload][target] = med

start = os.path.join(out, "takgate-start.json")
if os.path.exists(start):
    summary["takgate-start"] = json.load(open(start))
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)

print("| workload | target | " + " | ".join(n for n, _ in METRICS) + " | runs |")
print("|---|---|" + "---|" * (len(METRICS) + 1))
for workload, targets in summary.items():
    if workload == "takgate-start":
        continue
    for target in ("direct", "nginx", "takgate"):
        m = targets.get(target)
        if not m:
            continue
        cells = ["" if m[n] is None else str(m[n]) for n, _ in METRICS]
        print(f"| {workload} | {target} | " + " | ".join(cells) + f" | {m['runs']} |")
print()
print("| workload | takgate/nginx ops/s | takgate/nginx MB/s | p99 added over direct: nginx | takgate |")
print("|---|---|---|---|---|")
for workload, targets in summary.items():
    if workload == "takgate-start":
        continue
    t, n, d = targets.get("takgate"), targets.get("nginx"), targets.get("direct")
    def ratio(key):
        if t and n and t.get(key) and n.get(key):
            return f"{t[key] / n[key]:.2f}"
        return ""
    def added(x):
        if x and d and x.get("p99 ms") is not None and d.get("p99 ms") is not None:
            return f"{x['p99 ms'] - d['p99 ms']:.3f} ms"
        return ""
    print(f"| {workload} | {ratio('ops/s')} | {ratio('MB/s')} | {added(n)} | {added(t)} |")
if "takgate-start" in summary:
    s = summary["takgate-start"]
    print()
    print(f"takgate start to ready: {s['start_to_ready_ms']} ms; idle RSS {s['idle_rss_kb']} KiB")
