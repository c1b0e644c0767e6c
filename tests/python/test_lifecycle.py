"""The binary's lifecycle as an operator meets it: SIGTERM drains a request in
flight and exits 0, SIGHUP reloads certificates, the JSON access log."""

from __future__ import annotations

import json
import signal
import socket
import ssl
import threading

import requests

import harness
from conftest import web_config
from harness import toml_str

T = 10


class HoldingUpstream:
    """A one-request HTTP upstream that answers only when released, so a test
    can hold a request in flight for as long as it needs."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        self.sock.settimeout(T)
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(T)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            self.arrived.set()
            self.release.wait(T)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nConnection: close\r\n\r\nreleased")

    def close(self):
        self.release.set()
        self.sock.close()


def test_sigterm_finishes_the_request_in_flight_then_exits_0(takgate, ui_root):
    up = HoldingUpstream()
    try:
        gate = takgate(web_config(up.url, ui_root))
        result = {}

        def client():
            result["resp"] = requests.get(gate.url("web") + "/api/hold", timeout=T)

        t = threading.Thread(target=client)
        t.start()
        assert up.arrived.wait(T), "the request never reached the upstream"
        gate.proc.send_signal(signal.SIGTERM)
        host, port = harness.hostport(gate.addr("web"))
        harness.wait_until(lambda: not harness.can_connect(host, port), T, "the listener to close after SIGTERM")
        assert gate.proc.poll() is None, "takgate exited with a request still in flight"
        up.release.set()
        t.join(T)
        assert result["resp"].status_code == 200
        assert result["resp"].text == "released"
        gate.exit_code = harness.stop_process(gate.proc, signal.SIGTERM, timeout=T)
        assert gate.exit_code == 0
    finally:
        up.close()


def served_cert(addr: str) -> bytes:
    host, port = harness.hostport(addr)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=T) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            return tls.getpeercert(binary_form=True)


def test_sighup_reloads_certificates(takgate, fake_ots, ui_root, pki, tmp_path):
    cert = tmp_path / "server.pem"
    key = tmp_path / "server.key"
    cert.write_bytes(pki.server_cert.read_bytes())
    key.write_bytes(pki.server_key.read_bytes())
    tls = f"""
[[http]]
name = "web-tls"
listen = "127.0.0.1:0"
profile = "web"
ui_root = {toml_str(ui_root)}
[http.tls]
cert = {toml_str(cert)}
key = {toml_str(key)}
"""
    gate = takgate(web_config(fake_ots.url, ui_root, tls))
    before = served_cert(gate.addr("web-tls"))
    other = harness.make_pki(tmp_path / "renewed")
    cert.write_bytes(other.server_cert.read_bytes())
    key.write_bytes(other.server_key.read_bytes())
    gate.proc.send_signal(signal.SIGHUP)
    after = harness.wait_until(
        lambda: (lambda c: c if c != before else None)(served_cert(gate.addr("web-tls"))),
        T,
        "the renewed certificate to be served after SIGHUP",
    )
    assert after != before
    assert gate.proc.poll() is None, "SIGHUP must not stop takgate"
    metrics = requests.get(gate.admin_url + "/metrics", timeout=T).text
    ok = [line for line in metrics.splitlines() if line.startswith('takgate_tls_reloads_total{listener="web-tls",result="ok"}')]
    assert ok and float(ok[0].split()[-1]) >= 1, metrics


def test_json_access_log_has_one_line_per_request(takgate, fake_ots, ui_root):
    gate = takgate(web_config(fake_ots.url, ui_root, "").replace("[admin]", '[log]\nformat = "json"\n\n[admin]'))
    r = requests.get(gate.url("web") + "/api/echo/logged?x=1", timeout=T)
    assert r.status_code == 200

    def access_lines():
        lines = []
        for line in gate.log.read_text(errors="replace").splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if obj.get("target") == "takgate::access" and obj.get("path") == "/api/echo/logged":
                lines.append(obj)
        return lines or None

    lines = harness.wait_until(access_lines, T, "the access-log line")
    assert len(lines) == 1
    line = lines[0]
    assert line["method"] == "GET"
    assert line["status"] == 200
    assert line["route"] == "api"
    assert line["listener"] == "web"
    assert line["client"].startswith("127.0.0.1:")
    assert line["bytes"] == len(r.content)
    assert line["duration_ms"] >= line["upstream_ms"] >= 0
