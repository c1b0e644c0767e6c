"""Self-checks of the OTS stand-in, directly (no takgate). They pin down the
upstream behaviour the takgate tests rely on, including the failure mode
nginx's `proxy_set_header Host $host` causes."""

from __future__ import annotations

import pytest
import requests
import socketio
import websocket

import sioutil

T = 5


def test_health(fake_ots):
    r = requests.get(f"{fake_ots.url}/api/health", timeout=T)
    assert r.status_code == 200
    assert r.json() == {"status": "healthy"}


def test_echo_reports_request_and_proxyfix(fake_ots):
    r = requests.post(
        f"{fake_ots.url}/api/echo/a%2Fb/c?x=1&y=%20",
        data=b"z" * 1234,
        headers={
            "X-Forwarded-For": "127.0.0.9",
            "X-Forwarded-Host": "ots.example:8443",
            "X-Forwarded-Proto": "https",
            "X-Custom": "one",
        },
        timeout=T,
    )
    assert r.status_code == 200
    e = r.json()
    assert e["method"] == "POST"
    assert e["raw_target"] == "/api/echo/a%2Fb/c?x=1&y=%20"
    assert e["query"] == "x=1&y=%20"
    assert e["body_length"] == 1234
    # ProxyFix(x_for=1, x_host=1, x_proto=1) as in OTS:
    assert e["remote_addr"] == "127.0.0.9"
    assert e["host"] == "ots.example:8443"
    assert e["scheme"] == "https"
    assert e["peer_addr"] == "127.0.0.1"
    assert e["raw_host"] == f"127.0.0.1:{fake_ots.port}"
    assert ["X-Custom", "one"] in e["headers"]


def test_catch_all_echoes_marti(fake_ots):
    r = requests.get(f"{fake_ots.url}/Marti/api/clientEndPoints", timeout=T)
    assert r.status_code == 200
    assert r.json()["path"] == "/Marti/api/clientEndPoints"


def test_two_set_cookie_headers(fake_ots):
    r = requests.get(f"{fake_ots.url}/api/cookies", timeout=T)
    assert r.status_code == 200
    cookies = r.raw.headers.getlist("Set-Cookie")
    assert len(cookies) == 2, cookies
    assert cookies[0].startswith("session=s3ss10n;")
    assert cookies[1].startswith("XSRF-TOKEN=x5rf;")


def test_request_log(fake_ots):
    requests.get(f"{fake_ots.url}/api/echo/logged-once", timeout=T)
    seen = requests.get(f"{fake_ots.url}/__fake_ots/requests", timeout=T).json()["requests"]
    assert ["GET", "/api/echo/logged-once"] in seen


@pytest.mark.parametrize("transports", [["polling"], ["websocket"], ["polling", "websocket"]])
def test_socketio_direct_same_origin(fake_ots, transports):
    with sioutil.connected(fake_ots.url, fake_ots.url, transports) as (sio, events):
        w = sioutil.welcome(events)
        assert w["host"] == fake_ots.addr
        sioutil.wait_transport(sio, transports[-1])
        sioutil.roundtrip(sio, events)


def test_socketio_direct_foreign_origin_refused(fake_ots):
    """Negative control: engine.io without cors_allowed_origins refuses an
    Origin that does not match <scheme>://<Host>."""
    origin = f"http://127.0.0.1:{fake_ots.port + 1}"
    r = sioutil.polling_handshake(fake_ots.url, origin)
    assert r.status_code == 400
    assert "Not an accepted origin" in r.text
    with pytest.raises(websocket.WebSocketBadStatusException) as exc:
        websocket.create_connection(
            f"ws://{fake_ots.addr}/socket.io/?EIO=4&transport=websocket", origin=origin, timeout=T
        )
    assert exc.value.status_code == 400
    with pytest.raises(socketio.exceptions.ConnectionError):
        with sioutil.connected(fake_ots.url, origin, ["websocket"], timeout=T):
            pass


def test_socketio_host_without_port_refused(fake_ots):
    """What nginx's `proxy_set_header Host $host` does to a UI on a
    non-default port: Host loses the port, the Origin keeps it -> 400."""
    r = sioutil.polling_handshake(fake_ots.url, fake_ots.url, headers={"Host": "127.0.0.1"})
    assert r.status_code == 400
    assert "Not an accepted origin" in r.text


def test_socketio_forwarded_host_accepted(fake_ots):
    """The X-Forwarded-Proto/-Host pair (trusted by ProxyFix) also satisfies
    the origin check: another way a proxy can keep Socket.IO working."""
    r = sioutil.polling_handshake(
        fake_ots.url,
        "https://ots.example:8443",
        headers={"X-Forwarded-Host": "ots.example:8443", "X-Forwarded-Proto": "https"},
    )
    assert r.status_code == 200
    assert r.text.startswith("0{") and '"sid"' in r.text
