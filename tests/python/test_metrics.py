"""takgate's admin endpoints: /metrics must be valid, lint-clean Prometheus
text (promtool check metrics prints nothing and exits 0) and must move with
traffic; /healthz and /readyz answer 200."""

from __future__ import annotations

import re
import subprocess

import requests

import harness
import sioutil

T = 5
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*(?:\{.*\})?)\s+(\S+)(?:\s+\d+)?$")


def samples(text: str) -> dict:
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"unparseable sample line: {line!r}"
        out[m.group(1)] = float(m.group(2))
    return out


def scrape(gate: harness.Takgate) -> requests.Response:
    r = requests.get(f"{gate.admin_url}/metrics", timeout=T)
    assert r.status_code == 200
    assert r.headers.get("Content-Type", "").startswith("text/plain"), r.headers.get("Content-Type")
    return r


def test_health_endpoints(web_gate):
    for path in ("/healthz", "/readyz"):
        r = requests.get(f"{web_gate.admin_url}{path}", timeout=T)
        assert r.status_code == 200, (path, r.status_code, r.text)


def test_metrics_promtool_clean_and_moving(web_gate):
    before = samples(scrape(web_gate).text)

    base = web_gate.url("web")
    for _ in range(3):
        assert requests.get(f"{base}/api/health", timeout=T).status_code == 200
    assert requests.post(f"{base}/api/echo", data=b"abc" * 1000, timeout=T).status_code == 200
    assert requests.get(f"{base}/api/status/503", timeout=T).status_code == 503
    assert requests.get(f"{base}/api/status/404", timeout=T).status_code == 404
    assert sioutil.polling_handshake(base, base).status_code == 200
    with sioutil.connected(base, base, ["websocket"]) as (sio, events):
        sioutil.roundtrip(sio, events)

    text = scrape(web_gate).text
    after = samples(text)
    assert after, "no samples at all in /metrics"
    moved = [k for k, v in after.items() if v > before.get(k, 0.0)]
    assert moved, "no sample increased after 8 requests and a WebSocket"

    promtool = harness.promtool_bin()
    res = subprocess.run(
        [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=30
    )
    out = (res.stdout + res.stderr).decode(errors="replace")
    assert res.returncode == 0 and out == "", f"promtool exit {res.returncode}:\n{out}"


def test_promtool_catches_bad_metrics():
    """Control: the promtool check above can fail."""
    bad = "# HELP requests Requests.\n# TYPE requests counter\nrequests 1\n"
    res = subprocess.run(
        [harness.promtool_bin(), "check", "metrics"], input=bad.encode(), capture_output=True, timeout=30
    )
    assert res.returncode != 0
    assert b"_total" in res.stdout + res.stderr
