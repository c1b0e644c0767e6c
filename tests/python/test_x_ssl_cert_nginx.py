"""X-Ssl-Cert: takgate must send byte-for-byte what nginx sends as
`$ssl_client_escaped_cert` on OTS's 8443 block (the URL-escaped PEM of the
verified client leaf), never pass through a client-supplied one, and never
forward a request whose client certificate was not verified.

The reference is real nginx from Debian, configured as OTS's installer
configures port 8443 (nginx_configs/ots_https). nginx cannot take a
passed-in listener: harness.start_nginx picks a port by binding 127.0.0.1:0
and closing it, and retries if nginx then fails with EADDRINUSE."""

from __future__ import annotations

import http.client
import json
import uuid
from urllib.parse import unquote

import pytest
import requests

import harness
from conftest import marti_listener, web_config

T = 5
SPOOF = "-----BEGIN%20CERTIFICATE-----%0Aspoofed%0A-----END%20CERTIFICATE-----%0A"

pytestmark = pytest.mark.nginx


def ots_8443_server_block(pki: harness.Pki, upstream_port: int) -> str:
    return f"""
    server {{
        listen 127.0.0.1:{{port}} ssl;
        server_name opentakserver_8443;
        ssl_certificate {pki.server_cert};
        ssl_certificate_key {pki.server_key};
        ssl_verify_client on;
        ssl_client_certificate {pki.ca};
        client_max_body_size 100M;

        location /Marti/api/tls {{ return 404; }}
        location /Marti {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Ssl-Cert $ssl_client_escaped_cert;
        }}
        location /api {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_http_version 1.1;
            proxy_set_header Host $host:8443;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Ssl-Cert $ssl_client_escaped_cert;
        }}
    }}
"""


@pytest.fixture(scope="module")
def nginx_8443(pki, fake_ots, tmp_path_factory):
    ngx = harness.start_nginx(tmp_path_factory.mktemp("nginx"), ots_8443_server_block(pki, fake_ots.port))
    yield ngx
    code = ngx.stop()
    assert code is not None, "nginx did not stop on SIGQUIT"


def fetch_echo(base: str, pki: harness.Pki, client: str, path: str, spoof: bool = True) -> dict:
    headers = {"X-Ssl-Cert": SPOOF} if spoof else {}
    r = requests.get(f"{base}{path}", cert=pki.client(client), verify=str(pki.ca), headers=headers, timeout=T)
    assert r.status_code == 200, (r.status_code, r.text[:500])
    return r.json()


def only_x_ssl_cert(echo: dict) -> str:
    values = harness.header_values(echo["headers"], "X-Ssl-Cert")
    assert len(values) == 1, f"expected exactly one X-Ssl-Cert upstream, got {values!r}"
    return values[0]


def seen_paths(fake_ots) -> list:
    r = requests.get(f"{fake_ots.url}/__fake_ots/requests", timeout=T)
    return [target for _method, target in r.json()["requests"]]


# ------------------------------------------------------------------ the reference itself


@pytest.mark.parametrize("client", ["rsa", "ec"])
def test_nginx_reference_value(nginx_8443, pki, client):
    """Pins down nginx's format so the comparison below cannot pass vacuously:
    the header is the PEM of the client leaf, URL-escaped, one line, and it
    replaces a client-supplied X-Ssl-Cert."""
    base = f"https://127.0.0.1:{nginx_8443.port}"
    echo = fetch_echo(base, pki, client, "/Marti/api/clientEndPoints")
    value = only_x_ssl_cert(echo)
    assert value != SPOOF
    assert "\n" not in value and " " not in value
    assert value.startswith("-----BEGIN%20CERTIFICATE-----%0A")
    assert unquote(value).encode() == pki.client_pem(client)


def test_nginx_reference_rejects_missing_and_foreign_cert(nginx_8443, pki, fake_ots):
    base = f"https://127.0.0.1:{nginx_8443.port}"
    marker = f"/Marti/api/nocert-{uuid.uuid4().hex}"
    r = requests.get(f"{base}{marker}", verify=str(pki.ca), timeout=T)
    assert r.status_code == 400  # nginx: "No required SSL certificate was sent"
    try:
        r = requests.get(f"{base}{marker}", cert=pki.client("foreign"), verify=str(pki.ca), timeout=T)
        assert r.status_code == 400  # "The SSL certificate error"
    except requests.exceptions.SSLError:
        pass
    assert marker not in seen_paths(fake_ots)


# ------------------------------------------------------------------ takgate vs nginx


@pytest.fixture
def gate(takgate, fake_ots, ui_root, pki):
    return takgate(web_config(fake_ots.url, ui_root) + marti_listener(pki, "required"))


@pytest.mark.parametrize("client", ["rsa", "ec"])
@pytest.mark.parametrize("path", ["/Marti/api/clientEndPoints", "/api/packages/product.infz"])
def test_x_ssl_cert_identical_to_nginx(nginx_8443, gate, pki, client, path):
    nginx_value = only_x_ssl_cert(fetch_echo(f"https://127.0.0.1:{nginx_8443.port}", pki, client, path))
    takgate_value = only_x_ssl_cert(fetch_echo(gate.url("marti", "https"), pki, client, path))
    assert unquote(nginx_value).encode() == pki.client_pem(client)
    assert takgate_value == nginx_value


def test_marti_rejects_missing_and_foreign_cert(gate, pki, fake_ots):
    """client_auth = required: nothing without a verified certificate may
    reach OTS (a TLS failure or a 4xx are both acceptable to the client)."""
    base = gate.url("marti", "https")
    for cert in (None, pki.client("foreign")):
        marker = f"/Marti/api/nocert-{uuid.uuid4().hex}"
        try:
            r = requests.get(f"{base}{marker}", cert=cert, verify=str(pki.ca), headers={"X-Ssl-Cert": SPOOF}, timeout=T)
        except requests.exceptions.RequestException:
            pass  # handshake refused: fine
        else:
            assert 400 <= r.status_code < 500, (cert, r.status_code, r.text[:300])
        assert marker not in seen_paths(fake_ots)


def test_spoofed_x_ssl_cert_dropped_on_plain_web_listener(gate, fake_ots):
    """A client-supplied X-Ssl-Cert (any case, repeated) must not reach OTS
    from a listener without client certificates: OTS takes its CN as the
    identity."""
    host, port = harness.hostport(gate.addr("web"))
    conn = http.client.HTTPConnection(host, port, timeout=T)
    try:
        conn.putrequest("GET", "/api/echo/spoof", skip_host=True)
        conn.putheader("Host", gate.addr("web"))
        for name in ("X-Ssl-Cert", "x-ssl-cert", "X-SSL-CERT"):
            conn.putheader(name, SPOOF)
        conn.endheaders()
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    assert resp.status == 200, body[:300]
    echo = json.loads(body)
    assert echo["path"] == "/api/echo/spoof"
    assert harness.header_values(echo["headers"], "X-Ssl-Cert") == []
