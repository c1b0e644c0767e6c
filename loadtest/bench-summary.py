#!/usr/bin/env python3
"""Summarises a loadtest/bench output folder.

    bench-summary.py OUT [--publish ROOT]

Reads OUT/runs/WORKLOAD/TARGET-RUN.json (loadtest reports), OUT/meta.json, OUT/api-rate.json
and OUT/TARGET-start.json. Takes the median of every figure over the runs, per workload and
target; compares takgate (both builds) with the reference, nginx tuned (nginx-tuned; OTS's
installer's nginx when the tuned one is not in the run), and with OTS's installer's nginx, and
every target with direct; checks the figures against issue 15's bar (and issues 6's and 11's).
Writes OUT/summary.json, OUT/plots/WORKLOAD.svg (latency by percentile, HdrHistogram style:
every target on one chart, the median run bold and the others faint) and OUT/summary.md, and
prints the Markdown. With --publish, also writes
ROOT/BENCHMARKS.md and copies the plots and summary.json to ROOT/docs/bench/.

Python 3 standard library only: the plots are SVG written directly.
"""
import argparse
import json
import math
import os
import shutil
import statistics
import sys
from xml.sax.saxutils import escape

TARGETS = ("direct", "nginx-tuned", "nginx", "takgate", "takgate-musl")
COLORS = {"direct": "#6e7781", "nginx-tuned": "#bc4c00", "nginx": "#1a7f37", "takgate": "#0969da",
          "takgate-musl": "#8250df"}
# What the targets are, in the tables' headers.
HEADS = {"direct": "direct", "nginx-tuned": "nginx tuned", "nginx": "nginx (OTS)",
         "takgate": "takgate", "takgate-musl": "takgate musl"}
PROXIES = ("nginx-tuned", "nginx", "takgate", "takgate-musl")

# Workload: what it does, its throughput figure (label, report path), and the latency it plots.
WORKLOADS = {
    "static-2k": ("GET a 2 KB file, 16 keep-alive connections, as fast as it goes",
                  ("req/s", "ops.received_per_s"), "latency"),
    "static-1m": ("GET a 1 MB asset, 4 keep-alive connections, as fast as it goes",
                  ("MB/s", "bytes.received_mb_per_s"), "latency"),
    "api-max": ("GET /api/health proxied to a small JSON answer, 16 connections, as fast as it goes",
                ("req/s", "ops.received_per_s"), "latency"),
    "api-rate": ("GET /api/health at a fixed rate: half of the reference nginx's api-max",
                 ("req/s", "ops.received_per_s"), "latency"),
    "ws-relay": ("50 WebSockets on /socket.io, 1 KB messages echoed by the upstream, 4 in flight each",
                 ("msg/s", "ops.received_per_s"), "latency"),
    "cot-handshakes": ("2,000 mutual-TLS connections opened, 64 at a time, full handshakes",
                       ("handshakes/s", "connections.handshakes_per_s"), "connections.setup"),
    "cot-relay-1k": ("50 mutual-TLS CoT clients, 1 KB events echoed by the upstream, 8 in flight each",
                     ("msg/s", "ops.received_per_s"), "latency"),
    "cot-relay-1k-limits": ("cot-relay-1k through a takgate listener with every [stream.limits] on, set above what the clients send (direct and nginx: as cot-relay-1k)",
                            ("msg/s", "ops.received_per_s"), "latency"),
    "cot-relay-1k-bytes": ("cot-relay-1k with takgate relaying bytes (mode raw, no CoT framing): the work nginx does",
                           ("msg/s", "ops.received_per_s"), "latency"),
    "cot-latency-2000": ("2,000 mutual-TLS CoT clients at 1 event/s each, echoed by the upstream",
                         ("msg/s", "ops.received_per_s"), "latency"),
    "cot-latency-2000-limits": ("cot-latency-2000 through a takgate listener with every [stream.limits] on, set above what the clients send (direct and nginx: as cot-latency-2000)",
                                ("msg/s", "ops.received_per_s"), "latency"),
    "cot-idle-10k": ("10,000 idle mutual-TLS connections held (fewer under a low open-file limit); the server's RSS growth per connection",
                     ("KiB/conn", "server_rss.per_connection_kib"), None),
    "reorig-handshakes": ("cot-handshakes to OTS's TLS CoT port: direct, nginx passthrough, takgate reoriginate",
                          ("handshakes/s", "connections.handshakes_per_s"), "connections.setup"),
    "reorig-latency-2000": ("cot-latency-2000 to OTS's TLS CoT port: direct, nginx passthrough, takgate reoriginate; sending starts 2 s after the last handshake; direct reaches the same OTS stand-in (on the load core) that the proxies relay to",
                            ("msg/s", "ops.received_per_s"), "latency"),
    "reorig-idle-10k": ("cot-idle-10k to OTS's TLS CoT port: direct, nginx passthrough, takgate reoriginate (a client and an upstream TLS session each)",
                        ("KiB/conn", "server_rss.per_connection_kib"), None),
    # Issue 16: compression and HTTP/2 (no direct: none of it is the upstream's work).
    "ui-js": ("GET a 1 MB JavaScript bundle, no Accept-Encoding, 4 connections, as fast as it goes",
              ("req/s", "ops.received_per_s"), "latency"),
    "ui-js-br": ("ui-js with Chromium's Accept-Encoding (gzip, deflate, br, zstd)",
                 ("req/s", "ops.received_per_s"), "latency"),
    "api-json": ("GET /api proxied to a 64 KB JSON EUD list, no Accept-Encoding, 16 connections",
                 ("req/s", "ops.received_per_s"), "latency"),
    "api-json-br": ("api-json with Chromium's Accept-Encoding",
                    ("req/s", "ops.received_per_s"), "latency"),
    "h2-static-2k": ("static-2k over TLS and HTTP/2 (ALPN h2), 16 connections, one stream each",
                     ("req/s", "ops.received_per_s"), "latency"),
    "h2-ui-js": ("ui-js over TLS and HTTP/2 (ALPN h2), 4 connections, one stream each",
                 ("MB/s", "bytes.received_mb_per_s"), "latency"),
}
# Issue 16's table: these, with the bytes on the wire and the server's CPU per request.
COMPRESSION = ("ui-js", "ui-js-br", "api-json", "api-json-br", "h2-static-2k", "h2-ui-js")
FIXED_RATE = ("api-rate", "cot-latency-2000", "cot-latency-2000-limits")

# Issue 6's bar.
ADDED_P99_MAX_MS = 1.0
# Issue 15's: RSS per idle mTLS connection (issue 6 had 32 KiB).
KIB_PER_IDLE_CONN_MAX = 20
# Issue 15's: takgate over the reference nginx (tuned), throughput medians.
OVER_REF_MIN = {"static-2k": 1.2, "static-1m": 1.0, "api-max": 1.2, "ws-relay": 1.2,
                "cot-relay-1k": 1.2, "cot-relay-1k-bytes": 1.2}
START_TO_READY_MAX_MS = 50
IDLE_RSS_MAX_KB = 15e6 / 1024  # 15 MB
# Issue 13: the limits cost nothing measurable: takgate with them on keeps this share of its
# throughput with them off (the run-to-run spread of one workload on this machine is a few %).
LIMITS_MIN_RATIO = 0.95
# Issue 11's bar (takgate in mode reoriginate, in front of OTS's TLS CoT port).
REORIG_KIB_PER_IDLE_SESSION_MAX = 48


def get(r, path):
    for k in path.split("."):
        if not isinstance(r, dict):
            return None
        r = r.get(k)
    return r


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def load_runs(out):
    """{workload: {target: [report, ...]}}, reports in run order."""
    runs = {}
    root = os.path.join(out, "runs")
    for workload in sorted(os.listdir(root)) if os.path.isdir(root) else []:
        for f in sorted(os.listdir(os.path.join(root, workload))):
            if f.endswith(".json"):
                target, run = f[:-5].rsplit("-", 1)
                report = load_json(os.path.join(root, workload, f))
                runs.setdefault(workload, {}).setdefault(target, []).append((int(run), report))
    return {w: {t: [r for _, r in sorted(v, key=lambda x: x[0])] for t, v in ts.items()}
            for w, ts in runs.items()}


def median(reports, path):
    vals = [v for v in (get(r, path) for r in reports) if isinstance(v, (int, float))]
    return statistics.median(vals) if vals else None


def median_run(reports, latency_path):
    """The run whose p99 is the median one (the lower middle for an even count)."""
    ranked = sorted(reports, key=lambda r: get(r, latency_path + ".p99_ms") or 0)
    return ranked[(len(ranked) - 1) // 2] if ranked else None


def summarise(runs):
    summary = {}
    for workload, targets in runs.items():
        _, (unit, path), lat = WORKLOADS.get(workload, ("", ("ops/s", "ops.received_per_s"), "latency"))
        summary[workload] = {}
        for target, reports in targets.items():
            summary[workload][target] = {
                "runs": len(reports),
                "unit": unit,
                "value": median(reports, path),
                "ops_per_s": median(reports, "ops.received_per_s"),
                "mb_per_s": median(reports, "bytes.received_mb_per_s"),
                "p50_ms": median(reports, f"{lat}.p50_ms") if lat else None,
                "p99_ms": median(reports, f"{lat}.p99_ms") if lat else None,
                "p99_9_ms": median(reports, f"{lat}.p99_9_ms") if lat else None,
                "max_ms": median(reports, f"{lat}.max_ms") if lat else None,
                "handshakes_per_s": median(reports, "connections.handshakes_per_s"),
                "connections_held": median(reports, "server_rss.connections"),
                "kib_per_conn": median(reports, "server_rss.per_connection_kib"),
                "relay_p99_ms": median(reports, "server_relay.p99_ms"),
                "relay_within_1ms": median(reports, "server_relay.within_1ms"),
                "cpu_us_per_req": median(reports, "server_cpu.us_per_request"),
                "user_us_per_req": median(reports, "server_cpu.user_us_per_request"),
                "system_us_per_req": median(reports, "server_cpu.system_us_per_request"),
                "kb_per_req": (lambda b, n: b / n / 1000 if b and n else None)(
                    median(reports, "bytes.received"), median(reports, "ops.received")),
                "errors": sum(r.get("errors_total", 0) for r in reports),
                "latency": lat,
            }
        s = summary[workload]
        ratios = {}
        for num_t, den_t in RATIOS:
            a, b = s.get(num_t), s.get(den_t)
            if a and b and a["value"] and b["value"]:
                ratios[f"{num_t}/{den_t}"] = a["value"] / b["value"]
        s["ratios"] = ratios
        d = s.get("direct")
        for name in PROXIES:
            x = s.get(name)
            if x and d and x["p99_ms"] is not None and d["p99_ms"] is not None:
                x["p99_added_ms"] = x["p99_ms"] - d["p99_ms"]
                x["p50_added_ms"] = x["p50_ms"] - d["p50_ms"]
    return summary


def reference(summary):
    """The nginx every ratio and the bar compare with: tuned when it ran."""
    return "nginx-tuned" if any("nginx-tuned" in s for s in summary.values()) else "nginx"


# The throughput ratios reported: takgate over tuned nginx (the reference), over OTS's nginx,
# the shipped musl build over the reference, and the musl build over the glibc one.
# The workloads run as fast as they go, where CPU per operation bounds throughput.
MAX_RATE = ("static-2k", "static-1m", "api-max", "ws-relay", "cot-relay-1k", "cot-relay-1k-limits",
            "cot-relay-1k-bytes")

RATIOS = (("takgate", "nginx-tuned"), ("takgate", "nginx"), ("takgate-musl", "nginx-tuned"),
          ("takgate-musl", "takgate"))


# --- numbers ----------------------------------------------------------------------------------

def num(x, unit=""):
    """A figure with three significant digits (more for large ones), or a dash."""
    if x is None:
        return "–"
    ax = abs(x)
    if ax >= 100:
        s = f"{x:,.0f}"
    elif ax >= 10:
        s = f"{x:.1f}"
    elif ax >= 1:
        s = f"{x:.2f}"
    else:
        s = f"{x:.3f}"
    return s + (f" {unit}" if unit else "")


def signed_ms(x):
    return "–" if x is None else f"{x:+.3f}"


def added_ms(x):
    return "–" if x is None else f"{x:+.3f} ms"


# --- plots ------------------------------------------------------------------------------------

W, H = 760, 440
ML, MR, MT, MB = 70, 24, 56, 58


def x_of(p):
    """HdrHistogram's percentile axis: log10 of 1 / (1 - p)."""
    return math.log10(1 / (1 - p / 100)) if p < 100 else None


def nice_ticks(lo, hi):
    """1-2-5 ticks covering [lo, hi] on a log axis."""
    ticks = []
    e = math.floor(math.log10(lo))
    while 10 ** e <= hi * 1.0001:
        for m in (1, 2, 5):
            v = m * 10 ** e
            if lo * 0.9999 <= v <= hi * 1.0001:
                ticks.append(v)
        e += 1
    return ticks


def tick_label(v):
    return f"{v:g}" if v >= 0.001 else f"{v:.0e}"


def plot(title, subtitle, series):
    """series: {target: (median run's spectrum, [other runs' spectra], median run's p50/p99)},
    spectra as [(percentile, ms)]."""
    pts = [(p, ms) for med, others, _ in series.values() for s in [med, *others] for p, ms in s]
    if not pts:
        return None
    finite = [x_of(p) for p, _ in pts if p < 100]
    decades = max(3, math.ceil(max(finite, default=0)))
    x_end = decades + 0.6  # the maximum sits right of the last decade
    ys = [ms for _, ms in pts if ms > 0]
    y_lo = 10 ** math.floor(math.log10(min(ys)))
    y_hi = 10 ** math.ceil(math.log10(max(ys)))
    pw, ph = W - ML - MR, H - MT - MB

    def sx(p):
        x = x_of(p)
        return ML + pw * ((x if x is not None else x_end) / x_end)

    def sy(ms):
        ms = max(ms, y_lo)
        return MT + ph * (1 - (math.log10(ms) - math.log10(y_lo)) / (math.log10(y_hi) - math.log10(y_lo)))

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
           'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{ML}" y="20" font-size="15" font-weight="bold">{escape(title)}</text>',
           f'<text x="{ML}" y="38" fill="#57606a">{escape(subtitle)}</text>']
    for v in nice_ticks(y_lo, y_hi):
        y = sy(v)
        major = abs(math.log10(v) - round(math.log10(v))) < 1e-9
        out.append(f'<line x1="{ML}" y1="{y:.1f}" x2="{W - MR}" y2="{y:.1f}" stroke="#d0d7de" '
                   f'stroke-width="{1 if major else 0.5}"/>')
        out.append(f'<text x="{ML - 6}" y="{y + 4:.1f}" text-anchor="end">{tick_label(v)}</text>')
    labels = {0: "0%", 1: "90%", 2: "99%"}
    for d in range(decades + 1):
        x = ML + pw * d / x_end
        out.append(f'<line x1="{x:.1f}" y1="{MT}" x2="{x:.1f}" y2="{H - MB}" stroke="#d0d7de"/>')
        label = labels.get(d, "99." + "9" * (d - 2) + "%")
        out.append(f'<text x="{x:.1f}" y="{H - MB + 16}" text-anchor="middle">{label}</text>')
    out.append(f'<text x="{sx(100):.1f}" y="{H - MB + 16}" text-anchor="middle">max</text>')
    out.append(f'<rect x="{ML}" y="{MT}" width="{pw}" height="{ph}" fill="none" stroke="#8c959f"/>')
    out.append(f'<text x="{ML + pw / 2}" y="{H - 14}" text-anchor="middle">percentile</text>')
    out.append(f'<text transform="translate(16 {MT + ph / 2}) rotate(-90)" text-anchor="middle">'
               'latency (ms, log scale)</text>')

    def line(spectrum, color, width, opacity):
        body = [(p, ms) for p, ms in spectrum if p < 100]
        d = " ".join(f"{sx(p):.1f},{sy(ms):.1f}" for p, ms in body)
        parts = [f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="{width}" '
                 f'stroke-opacity="{opacity}"/>'] if len(body) > 1 else []
        top = [(p, ms) for p, ms in spectrum if p >= 100]
        if body and top:
            (p0, m0), (_, m1) = body[-1], top[0]
            parts.append(f'<line x1="{sx(p0):.1f}" y1="{sy(m0):.1f}" x2="{sx(100):.1f}" y2="{sy(m1):.1f}" '
                         f'stroke="{color}" stroke-width="{width}" stroke-opacity="{opacity}" '
                         'stroke-dasharray="3 3"/>')
            parts.append(f'<circle cx="{sx(100):.1f}" cy="{sy(m1):.1f}" r="{width + 1}" fill="{color}" '
                         f'fill-opacity="{opacity}"/>')
        return parts

    for target in TARGETS:
        if target not in series:
            continue
        med, others, _ = series[target]
        for s in others:
            out += line(s, COLORS[target], 1, 0.3)
        out += line(med, COLORS[target], 2.2, 1)
    lx, ly = ML + 12, MT + 16
    for target in TARGETS:
        if target in series:
            out.append(f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 22}" y2="{ly - 4}" '
                       f'stroke="{COLORS[target]}" stroke-width="2.2"/>')
            m = series[target][2]
            out.append(f'<text x="{lx + 28}" y="{ly}">{target}</text>')
            out.append(f'<text x="{lx + 120}" y="{ly}" fill="#57606a">p50 {num(m["p50_ms"])} ms, '
                       f'p99 {num(m["p99_ms"])} ms (bold run)</text>')
            ly += 18
    out.append("</svg>")
    return "\n".join(out) + "\n"


def spectrum_of(report, lat_path):
    return [(s["percentile"], s["ms"]) for s in (get(report, lat_path + ".spectrum") or [])]


def write_plots(out, runs, summary, api_rate):
    os.makedirs(os.path.join(out, "plots"), exist_ok=True)
    written = {}
    for workload, targets in runs.items():
        what, _, lat = WORKLOADS.get(workload, ("", None, "latency"))
        if not lat:
            continue
        series = {}
        for target, reports in targets.items():
            med = median_run(reports, lat)
            series[target] = (spectrum_of(med, lat), [spectrum_of(r, lat) for r in reports if r is not med],
                              {"p50_ms": get(med, f"{lat}.p50_ms"), "p99_ms": get(med, f"{lat}.p99_ms")})
        if workload == "api-rate" and api_rate:
            what = f"GET /api/health at {api_rate['rate']:,} req/s ({api_rate['source']})"
        kind = "connection setup (TCP + TLS handshake)" if lat == "connections.setup" else \
            "latency from each operation's intended start"
        n = max(len(r) for r in targets.values())
        svg = plot(f"{workload}: {kind}", f"{what}; median run of {n} bold", series)
        if svg:
            name = f"{workload}.svg"
            with open(os.path.join(out, "plots", name), "w") as f:
                f.write(svg)
            written[workload] = name
    return written


# --- bar --------------------------------------------------------------------------------------

def checks(summary, starts):
    rows = []
    ref = reference(summary)

    def fig(w, t, key):
        return (summary.get(w, {}).get(t) or {}).get(key)

    for w, label in (("static-2k", "static 2 KB req/s"), ("static-1m", "static 1 MB MB/s"),
                     ("api-max", "/api proxy req/s"), ("ws-relay", "WebSocket relay msg/s"),
                     ("cot-relay-1k", "CoT relay msg/s (1 KB), framed and checked"),
                     ("cot-relay-1k-bytes", "CoT relay msg/s (1 KB), bytes only as nginx")):
        t, n = fig(w, "takgate", "value"), fig(w, ref, "value")
        need = OVER_REF_MIN[w] if ref == "nginx-tuned" else 1.0
        ok = None if t is None or n is None else t >= need * n
        got = num(t) if t is None or not n else f"{num(t)} ({t / n:.2f}×)"
        rows.append((f"takgate ≥ {need:.1f}× {HEADS[ref]}: {label}",
                     "–" if n is None else f"≥ {num(need * n)}", got, ok))
    t, g = fig("api-max", "takgate-musl", "value"), fig("api-max", "takgate", "value")
    rows.append(("shipped musl build ≥ glibc build: /api proxy req/s", "–" if g is None else f"≥ {num(g)}",
                 num(t) if t is None or not g else f"{num(t)} ({t / g:.2f}×)",
                 None if t is None or g is None else t >= g))
    for w in FIXED_RATE:
        t, n = fig(w, "takgate", "p99_added_ms"), fig(w, ref, "p99_added_ms")
        ok = None if t is None or n is None else t <= n
        rows.append((f"p99 added over direct ≤ {HEADS[ref]}'s: {w}", "–" if n is None else f"≤ {added_ms(n)}",
                     added_ms(t), ok))
    for w, label in (("api-rate", f"/api proxy at half of {HEADS[ref]}'s maximum rate"),
                     ("cot-latency-2000", "CoT, 2,000 clients × 1 event/s")):
        t = fig(w, "takgate", "p99_added_ms")
        rows.append((f"p99 added over direct ≤ 1 ms: {label}", f"≤ {ADDED_P99_MAX_MS:.3f} ms",
                     added_ms(t), None if t is None else t <= ADDED_P99_MAX_MS))
    rows += own_relay_rows(fig, "cot-latency-2000", "terminate")
    k = fig("cot-idle-10k", "takgate", "kib_per_conn")
    held = fig("cot-idle-10k", "takgate", "connections_held")
    rows.append((f"RSS per idle mTLS connection ({num(held)} held)", f"≤ {KIB_PER_IDLE_CONN_MAX} KiB",
                 num(k, "KiB"), None if k is None else k <= KIB_PER_IDLE_CONN_MAX))
    rows += limits_checks(fig) if "cot-relay-1k-limits" in summary else []
    rows += reorig_checks(fig, ref) if any(w.startswith("reorig-") for w in summary) else []
    start = starts.get("takgate") or {}
    s = start.get("start_to_ready_ms")
    rows.append(("takgate start to ready", f"≤ {START_TO_READY_MAX_MS} ms", num(s, "ms"),
                 None if s is None else s <= START_TO_READY_MAX_MS))
    for t in ("takgate", "takgate-musl"):
        rss = (starts.get(t) or {}).get("idle_rss_kb")
        rows.append((f"{HEADS[t]} idle RSS", "≤ 15 MB", "–" if rss is None else f"{rss * 1024 / 1e6:.1f} MB",
                     None if rss is None else rss <= IDLE_RSS_MAX_KB))
    return rows


def own_relay_rows(fig, w, mode):
    """What takgate adds by its own clock (`takgate_cot_relay_latency_seconds`, from reading a
    client's frame to finishing its write to OTS): free of the load generator's and the
    machine's scheduling noise, which the added p99 above carries on two cores."""
    p99, within = fig(w, "takgate", "relay_p99_ms"), fig(w, "takgate", "relay_within_1ms")
    if p99 is None and within is None:
        return []
    shown = "–" if p99 is None else f"{p99:.3f} ms"
    if within is not None:
        shown += f" ({within * 100:.2f} % of frames ≤ 1 ms)"
    return [(f"{mode}: p99 of takgate's own relay hop, client → OTS ({w}, its histogram)",
             f"≤ {ADDED_P99_MAX_MS:.3f} ms", shown, None if p99 is None else p99 <= ADDED_P99_MAX_MS)]


def limits_checks(fig):
    """Issue 13: [stream.limits] on (none reached) against off, takgate alone, same run."""
    on, off = fig("cot-relay-1k-limits", "takgate", "value"), fig("cot-relay-1k", "takgate", "value")
    ratio = None if on is None or not off else on / off
    rows = [("limits on / off: CoT relay msg/s (1 KB)", f"≥ {LIMITS_MIN_RATIO:.2f}×",
             "–" if ratio is None else f"{ratio:.3f}× ({num(on)} / {num(off)})",
             None if ratio is None else ratio >= LIMITS_MIN_RATIO)]
    on = fig("cot-latency-2000-limits", "takgate", "p99_added_ms")
    off = fig("cot-latency-2000", "takgate", "p99_added_ms")
    rows.append(("limits on / off: p99 added, CoT 2,000 clients × 1 event/s", f"off: {added_ms(off)}",
                 added_ms(on), None))
    return rows


def reorig_checks(fig, ref):
    """Issue 11's bar: takgate's reoriginate mode in front of OTS's TLS CoT port."""
    rows = []
    t = fig("reorig-latency-2000", "takgate", "p99_added_ms")
    rows.append(("reoriginate: p99 added over direct ≤ 1 ms: CoT, 2,000 clients × 1 event/s",
                 f"≤ {ADDED_P99_MAX_MS:.3f} ms", added_ms(t), None if t is None else t <= ADDED_P99_MAX_MS))
    rows += own_relay_rows(fig, "reorig-latency-2000", "reoriginate")
    k = fig("reorig-idle-10k", "takgate", "kib_per_conn")
    held = fig("reorig-idle-10k", "takgate", "connections_held")
    rows.append((f"reoriginate: RSS per idle session, client + upstream TLS ({num(held)} held)",
                 f"≤ {REORIG_KIB_PER_IDLE_SESSION_MAX} KiB", num(k, "KiB"),
                 None if k is None else k <= REORIG_KIB_PER_IDLE_SESSION_MAX))
    t, n = fig("reorig-handshakes", "takgate", "value"), fig("reorig-handshakes", ref, "value")
    rows.append((f"reoriginate ≥ {HEADS[ref]} stream passthrough: full handshakes/s",
                 "–" if n is None else f"≥ {num(n)}", num(t), None if t is None or n is None else t >= n))
    return rows


# --- markdown ---------------------------------------------------------------------------------

def markdown(out, meta, summary, runs, plots, plot_dir, starts, api_rate):
    meta = meta or {}
    m = meta.get("machine", {})
    present = [t for t in TARGETS if any(t in s for s in summary.values())]
    L = []
    L.append("# Benchmarks")
    L.append("")
    L.append("takgate (the glibc build, and the static musl build that ships) against nginx (the "
             "Debian package) twice: tuned the way nginx's documentation recommends for a proxy "
             "(*nginx tuned*: upstream keep-alive and the rest, the reference of every ratio), and "
             "configured the way OpenTAK Server's installer configures it (*nginx (OTS)*); and "
             "against a direct connection to the upstream; on the same machine in the same run. "
             "Generated by `loadtest/bench` (see [Method](#method)); every figure is the "
             f"median of {meta.get('runs', '?')} runs.")
    L.append("")
    L.append(f"- **Date:** {meta.get('date', '?')}")
    L.append(f"- **Command:** `{meta.get('command', '?')}`"
             + (f" ({meta['elapsed_s'] // 60} min {meta['elapsed_s'] % 60} s)" if "elapsed_s" in meta else ""))
    L.append(f"- **Machine:** {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('memory_gib', '?')} GiB; "
             f"{m.get('os', '?')}, Linux {m.get('kernel', '?')}")
    L.append(f"- **Versions:** {m.get('nginx', '?')}; {m.get('rustc', '?')}; takgate at `{m.get('commit', '?')}`")
    L.append(f"- **Pinning:** server on CPU {meta.get('server_cpu', '?')}; load generator and upstream "
             f"stand-ins on CPU {meta.get('load_cpu', '?')}")
    if api_rate:
        L.append(f"- **api-rate:** {api_rate['rate']:,} req/s, {api_rate['source']}")
    L.append("")

    reorig = any(w.startswith("reorig-") for w in summary)
    L.append("## Bar (issues 6, 11 and 15)" if reorig else "## Bar (issues 6 and 15)")
    L.append("")
    L.append("| check | bar | takgate | |")
    L.append("|---|---|---|---|")
    for name, bar, got, ok in checks(summary, starts):
        if ok is None and got == "–":
            continue  # a workload (or target) this run left out
        L.append(f"| {name} | {bar} | {got} | {'–' if ok is None else ('✓' if ok else '✗')} |")
    L.append("")
    # Written by hand beside the plots: what bounds the bars not reached, and the profiles
    # that show it (issue 15). Figures in it are from the run it names, not from this one.
    bounds = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "bench", "bounds.md")
    if os.path.exists(bounds):
        with open(bounds) as f:
            L.append(f.read().rstrip("\n"))
        L.append("")

    L.append("## Throughput")
    L.append("")
    ratio_cols = [r for r in RATIOS if r[0] in present and r[1] in present]
    L.append("| workload | figure | " + " | ".join(HEADS[t] for t in present) + " | "
             + "".join(f"{HEADS[a]} / {HEADS[b]} | " for a, b in ratio_cols) + "errors |")
    L.append("|---|---|" + "---:|" * (len(present) + len(ratio_cols)) + "---|")
    for w in ordered(summary):
        s = summary[w]
        unit = next((s[t]["unit"] for t in TARGETS if t in s), "")
        cells = [num((s.get(t) or {}).get("value")) for t in present]
        ratios = [s.get("ratios", {}).get(f"{a}/{b}") for a, b in ratio_cols]
        errs = "/".join(str((s.get(t) or {}).get("errors", "–")) for t in present)
        L.append(f"| {w} | {unit} | " + " | ".join(cells) + " | "
                 + "".join(("–" if r is None else f"{r:.2f}") + " | " for r in ratios) + errs + " |")
    L.append("")
    L.append("Errors are given per target, in the order of the columns.")
    L.append("")

    # Where the server core's time goes per operation at maximum rate: with the server alone on
    # its core, throughput is the inverse of this, so it says which half bounds a ratio.
    rows = [w for w in MAX_RATE if w in summary
            and any((summary[w].get(t) or {}).get("user_us_per_req") is not None for t in present)]
    cpu_targets = [t for t in ("nginx-tuned", "takgate") if t in present]
    if rows and cpu_targets:
        L.append("## CPU per operation")
        L.append("")
        L.append("Microseconds of the server's process time per operation at maximum rate, user "
                 "and system (utime and stime over the run), median of the runs. The server has its "
                 "core to itself, so its throughput is about the inverse of the sum.")
        L.append("")
        L.append("| workload | " + " | ".join(f"{HEADS[t]}: user | {HEADS[t]}: system" for t in cpu_targets) + " |")
        L.append("|---|" + "---:|---:|" * len(cpu_targets))
        for w in rows:
            cells = []
            for t in cpu_targets:
                x = summary[w].get(t) or {}
                cells += [num(x.get("user_us_per_req")), num(x.get("system_us_per_req"))]
            L.append(f"| {w} | " + " | ".join(cells) + " |")
        L.append("")

    rows = [w for w in COMPRESSION if w in summary]
    if rows:
        L.append("## Compression and HTTP/2 (issue 16)")
        L.append("")
        L.append("nginx as Debian ships it (`gzip on`, `gzip_types` text/html only) sends the bundle "
                 "and the JSON identity-encoded; takgate compresses them for a client that accepts "
                 "it (the bundle from its static cache's brotli copy, the JSON on the fly). KB/req: "
                 "body bytes on the wire per response. CPU: the server's process time per request "
                 "(utime + stime over the run), median of the runs.")
        L.append("")
        L.append("| workload | req/s nginx | req/s takgate | KB/req nginx | KB/req takgate "
                 "| CPU µs/req nginx | CPU µs/req takgate | takgate / nginx (req/s) |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for w in rows:
            s = summary[w]
            n, t = s.get("nginx") or {}, s.get("takgate") or {}
            ratio = (t["ops_per_s"] / n["ops_per_s"]) if t.get("ops_per_s") and n.get("ops_per_s") else None
            L.append(f"| {w} | {num(n.get('ops_per_s'))} | {num(t.get('ops_per_s'))} "
                     f"| {num(n.get('kb_per_req'))} | {num(t.get('kb_per_req'))} "
                     f"| {num(n.get('cpu_us_per_req'))} | {num(t.get('cpu_us_per_req'))} "
                     f"| {'–' if ratio is None else f'{ratio:.2f}'} |")
        L.append("")

    L.append("## Latency")
    L.append("")
    L.append("Milliseconds. From each operation's *intended* start (open model: a stalled server "
             "delays the requests queued behind it, and that counts) to its response or echo; for "
             "cot-handshakes and reorig-handshakes, connection setup (TCP connect + TLS handshake). "
             "*Added* is the target's p99 minus direct's.")
    L.append("")
    proxies = [t for t in present if t != "direct"]
    L.append("| workload | " + " | ".join(f"p50 {HEADS[t]}" for t in present) + " | "
             + " | ".join(f"p99 {HEADS[t]}" for t in present) + " | "
             + " | ".join(f"p99 added: {HEADS[t]}" for t in proxies) + " |")
    L.append("|---|" + "---:|" * (2 * len(present) + len(proxies)))
    for w in ordered(summary):
        s = summary[w]
        if not WORKLOADS.get(w, ("", None, "latency"))[2]:
            continue
        p50 = [num((s.get(t) or {}).get("p50_ms")) for t in present]
        p99 = [num((s.get(t) or {}).get("p99_ms")) for t in present]
        added = [signed_ms((s.get(t) or {}).get("p99_added_ms")) for t in proxies]
        L.append(f"| {w} | " + " | ".join(p50 + p99 + added) + " |")
    L.append("")

    L.append("## Connections and memory")
    L.append("")
    L.append("| | " + " | ".join(HEADS[t] for t in present) + " |")
    L.append("|---|" + "---:|" * len(present))

    def row(label, fig):
        L.append(f"| {label} | " + " | ".join(fig(t) for t in present) + " |")

    def mb(t):
        r = (starts.get(t) or {}).get("idle_rss_kb")
        return "–" if r is None else f"{r * 1024 / 1e6:.1f}"

    hs = summary.get("cot-handshakes", {})
    row("mTLS handshakes/s (2,000 connections, 64 at a time)",
        lambda t: num((hs.get(t) or {}).get("handshakes_per_s")))
    idle = summary.get("cot-idle-10k", {})
    row("RSS per idle mTLS connection, KiB", lambda t: num((idle.get(t) or {}).get("kib_per_conn")))
    row("idle connections held", lambda t: num((idle.get(t) or {}).get("connections_held")))
    row("start to ready, ms", lambda t: num((starts.get(t) or {}).get("start_to_ready_ms")))
    row("idle RSS, MB", mb)
    if reorig:
        rhs = summary.get("reorig-handshakes", {})
        row("to OTS's TLS port: handshakes/s (2,000 connections, 64 at a time)",
            lambda t: num((rhs.get(t) or {}).get("handshakes_per_s")))
        ridle = summary.get("reorig-idle-10k", {})
        row("to OTS's TLS port: RSS per idle session, KiB",
            lambda t: num((ridle.get(t) or {}).get("kib_per_conn")))
        row("to OTS's TLS port: idle sessions held",
            lambda t: num((ridle.get(t) or {}).get("connections_held")))
    L.append("")
    L.append("Direct's CoT figures are the upstream stand-in's own (a rustls echo server); nginx's "
             "RSS is its master and worker together.")
    if reorig:
        L.append("To OTS's TLS port (reorig-*), nginx only relays TCP (TLS runs end to end between "
                 "client and OTS), so its sessions hold no TLS state, and its handshakes are OTS's; "
                 "takgate's hold two TLS sessions (the client's, and its own to OTS) and it does both "
                 "handshakes.")
    L.append("")

    if plots:
        L.append("## Latency by percentile")
        L.append("")
        L.append("One chart per workload, HdrHistogram style: the x axis is the percentile on a "
                 "log scale of 1 / (1 − p), so each step right is ten times rarer; the right edge is "
                 "the maximum. The median run (by p99) is bold, the other runs faint.")
        L.append("")
        for w in ordered(plots):
            L.append(f"### {w}")
            L.append("")
            L.append(f"![{w}: latency by percentile]({plot_dir}/{plots[w]})")
            L.append("")

    L.append("## Method")
    L.append("")
    L.append("- Five targets: **direct** (the load generator straight to the upstream stand-in); "
             "**nginx (OTS)** (one worker; `http` proxy for `/api` and `/socket.io` with a new "
             "upstream connection per request, static files with `sendfile`, `stream` with "
             "`ssl_verify_client on` for CoT over TLS, as OTS's installer writes them); **nginx "
             "tuned**, the reference of every ratio (the same, plus what nginx's documentation "
             "recommends for a proxy: an `upstream` block with `keepalive 64` and "
             "`keepalive_requests 100000`, `proxy_http_version 1.1` and `proxy_set_header "
             "Connection \"\"` for `/api`, `open_file_cache`, `tcp_nodelay`, `multi_accept on`, and "
             "an `ssl_session_cache` in `stream`); **takgate** (a `web` listener and `[[stream]]` "
             "listeners terminating mutual TLS; the glibc release build) and **takgate musl** (the "
             "same source built for `x86_64-unknown-linux-musl` as `deploy/Dockerfile` builds the "
             "shipped image). The nginx configurations are written by `loadtest/bench` "
             "(`nginx_config`).")
    L.append("- Upstream stand-ins (`loadtest sink`): an HTTP + WebSocket echo for the OTS API and a "
             "CoT echo, behind nginx and takgate; they share one core with the load generator "
             "(`loadtest --threads 1`), and the server under test has the other core to itself "
             "(`taskset`). For direct, the server is a second set of stand-ins on the server's "
             "core: the same HTTP echo, and the CoT echo over mutual TLS.")
    L.append("- Every workload runs against every target once per run; runs alternate the order "
             "of the targets. api-max runs first, for every target and run; api-rate then runs at "
             "half of nginx tuned's median api-max.")
    L.append("- takgate's start to ready: from exec to the first 200 from `/readyz` (every "
             "listener bound, the upstreams answering), polled every millisecond; median of 5 "
             "cold starts. Idle RSS: one second after ready, before any traffic.")
    L.append("- RSS per idle connection: a freshly started server's RSS while 10,000 idle mTLS "
             "connections (or as many as the open-file limit allows) are held, once its count of "
             "established connections has stopped growing, minus its RSS before, over the "
             "connections held.")
    if reorig:
        L.append("- reorig-* (issue 11): the upstream is OTS's TLS CoT port (`eud_handler --ssl`), "
                 "stood in for by `loadtest sink --ots`: a CoT echo over TLS with a certificate "
                 "whose subject CN is opentakserver, requiring client certificates from the "
                 "bench's CA. **direct** connects to it with the client's certificate; **nginx** "
                 "relays TCP to it (`stream { server { listen ...; proxy_pass ...; } }`, "
                 "passthrough); **takgate** terminates the client's mutual TLS and re-originates "
                 "TLS to it (`mode = \"reoriginate\"`), presenting a certificate it issues "
                 "for the client's CN with the CA's key. The clients' four certificates (four "
                 "CNs) are taken in turn, so takgate issues four certificates and then serves "
                 "them from its cache.")
    L.append("- At maximum rate (static, api-max, ws-relay, cot-relay-1k) latency is mostly "
             "queueing and follows throughput; the latency comparison that matters is at fixed "
             "rates (api-rate, cot-latency-2000).")
    L.append("")
    L.append("### Profiling")
    L.append("")
    L.append("Where takgate's time goes, in the release build with its symbols (the release "
             "profile strips them; `CARGO_PROFILE_RELEASE_STRIP=none` and "
             "`CARGO_PROFILE_RELEASE_DEBUG=line-tables-only` keep them without changing the code "
             "generated):")
    L.append("")
    L.append("```sh")
    L.append("CARGO_PROFILE_RELEASE_STRIP=none CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \\")
    L.append("  cargo build --release -p takgate -p loadtest")
    L.append("# CPU time by function, at load (run the bench's takgate config, or any):")
    L.append("perf record --call-graph dwarf -p $(pidof takgate) -- sleep 5   # while loadtest runs")
    L.append("perf report --no-children --percent-limit 1")
    L.append("# Instructions per request, repeatable on a busy machine (callgrind counts, it does")
    L.append("# not time): a fixed number of requests through takgate under valgrind")
    L.append("valgrind --tool=callgrind --callgrind-out-file=cg.out target/release/takgate --config takgate.toml &")
    L.append("target/release/loadtest http --url http://127.0.0.1:28080/api/health --rate 2000 -c 16 --duration 5s")
    L.append("callgrind_annotate cg.out | head -40   # total Ir / requests = instructions per request")
    L.append("# Syscalls per request")
    L.append("strace -c -f -p $(pidof takgate)   # while loadtest runs; divide by its request count")
    L.append("```")
    L.append("")
    L.append("Where `perf` has no hardware counters (a VM), `perf record` falls back to a "
             "timer (`-e cpu-clock`); callgrind's counts do not depend on it.")
    L.append("")
    L.append("| workload | what | takgate's command line |")
    L.append("|---|---|---|")
    for w in ordered(runs):
        t = runs[w].get("takgate") or next(iter(runs[w].values()))
        # The bench's output folder, whatever it was, as the shell variable the bench sets.
        args = (get(t[0], "bench.args") or "").replace(out, "$OUT")
        L.append(f"| {w} | {WORKLOADS.get(w, ('',))[0]} | `loadtest {args}` |")
    L.append("")
    L.append("Raw reports (one loadtest JSON report per workload, target and run) are in the bench's "
             "output folder; `summary.json` holds the medians.")
    L.append("")
    return "\n".join(L)


def ordered(d):
    known = [w for w in WORKLOADS if w in d]
    return known + sorted(w for w in d if w not in WORKLOADS)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--publish", metavar="ROOT", help="write ROOT/BENCHMARKS.md and ROOT/docs/bench/")
    a = ap.parse_args()
    out = os.path.abspath(a.out)
    runs = load_runs(out)
    if not runs:
        sys.exit(f"bench-summary: no reports in {out}/runs")
    meta = load_json(os.path.join(out, "meta.json"))
    starts = {t: load_json(os.path.join(out, f"{t}-start.json")) for t in TARGETS if t != "direct"}
    api_rate = load_json(os.path.join(out, "api-rate.json")) if "api-rate" in runs else None
    summary = summarise(runs)
    plots = write_plots(out, runs, summary, api_rate)
    doc = {"meta": meta, "api_rate": api_rate, "reference": reference(summary), "starts": starts,
           "workloads": summary,
           "bar": [{"check": c, "bar": b, "takgate": g, "ok": ok} for c, b, g, ok in checks(summary, starts)]}
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(doc, f, indent=2)
    md = markdown(out, meta, summary, runs, plots, "plots", starts, api_rate)
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(md)
    print(md)
    if a.publish:
        dest = os.path.join(a.publish, "docs", "bench")
        os.makedirs(dest, exist_ok=True)
        for name in plots.values():
            shutil.copy(os.path.join(out, "plots", name), os.path.join(dest, name))
        shutil.copy(os.path.join(out, "summary.json"), os.path.join(dest, "summary.json"))
        with open(os.path.join(a.publish, "BENCHMARKS.md"), "w") as f:
            f.write(markdown(out, meta, summary, runs, plots, "docs/bench", starts, api_rate))
        print(f"bench-summary: wrote {a.publish}/BENCHMARKS.md and {dest}/", file=sys.stderr)


if __name__ == "__main__":
    main()
