"""Socket.IO through takgate, as OTS's browser UI uses it.

The browser sends `Origin: http://<the address it loaded the UI from>`, which
is takgate's own address. OTS's engine.io (no cors_allowed_origins) accepts
that only if the Host it sees (or X-Forwarded-Host) carries the same
host:port, i.e. takgate must forward Host verbatim. Negative controls show the
same request fails directly against OTS, and a foreign Origin fails through
takgate."""

from __future__ import annotations

import json
import queue

import pytest
import requests
import socketio
import websocket

import harness
import sioutil
from conftest import web_config

T = 5
EVIL = "http://evil.example"


@pytest.mark.parametrize(
    "transports",
    [["polling"], ["websocket"], ["polling", "websocket"]],
    ids=["polling", "websocket", "polling-upgrade"],
)
def test_socketio_through_takgate(web_gate, transports):
    origin = web_gate.url("web")  # what a browser on takgate's UI sends
    with sioutil.connected(web_gate.url("web"), origin, transports) as (sio, events):
        w = sioutil.welcome(events)
        # Host forwarded verbatim (with port); X-Forwarded-* from takgate
        assert w["host"] == web_gate.addr("web")
        assert w["scheme"] == "http"
        assert w["remote_addr"] == "127.0.0.1"
        sioutil.wait_transport(sio, transports[-1])
        sioutil.roundtrip(sio, events)
        sioutil.roundtrip(sio, events, size=200_000)


def test_direct_with_takgate_origin_is_refused(web_gate, fake_ots):
    """Negative control: the very same Origin sent straight to OTS (whose
    Host then is OTS's own address) is refused, which is what OTS does
    behind nginx's `Host $host`. So the positive test above cannot pass
    unless takgate gets Host/Origin right."""
    origin = web_gate.url("web")
    r = sioutil.polling_handshake(fake_ots.url, origin)
    assert r.status_code == 400
    assert "Not an accepted origin" in r.text
    with pytest.raises(socketio.exceptions.ConnectionError):
        with sioutil.connected(fake_ots.url, origin, ["polling"], timeout=T):
            pass
    with pytest.raises(socketio.exceptions.ConnectionError):
        with sioutil.connected(fake_ots.url, origin, ["websocket"], timeout=T):
            pass


def test_foreign_origin_refused_through_takgate(web_gate):
    """takgate must not make OTS accept a foreign Origin (e.g. by rewriting
    Host or X-Forwarded-Host from the Origin). Whether OTS refuses it (400
    "Not an accepted origin") or takgate itself does (any 4xx) is not
    specified; no engine.io session may open."""
    base = web_gate.url("web")
    with pytest.raises(websocket.WebSocketBadStatusException) as exc:
        websocket.create_connection(
            f"ws://{web_gate.addr('web')}/socket.io/?EIO=4&transport=websocket", origin=EVIL, timeout=T
        )
    assert 400 <= exc.value.status_code < 500
    with pytest.raises(socketio.exceptions.ConnectionError):
        with sioutil.connected(base, EVIL, ["websocket"], timeout=T):
            pass
    r = sioutil.polling_handshake(base, EVIL)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:200])
    assert '"sid"' not in r.text


def test_raw_websocket_handshake_through_takgate(web_gate):
    """engine.io over a bare WebSocket frame by frame: open packet (0),
    socket.io CONNECT to the namespace (40), an event (42) and its echo."""
    ws = websocket.create_connection(
        f"ws://{web_gate.addr('web')}/socket.io/?EIO=4&transport=websocket",
        origin=web_gate.url("web"),
        timeout=T,
    )
    try:
        opening = ws.recv()
        assert opening.startswith("0{") and '"sid"' in opening
        ws.send("40/socket.io,")
        frames = [ws.recv(), ws.recv()]  # CONNECT ack and "welcome", in either order
        assert sorted(f[:14] for f in frames) == ["40/socket.io,{", '42/socket.io,['], frames
        ws.send('42/socket.io,["echo","raw ✓"]')
        reply = ws.recv()
        assert reply.startswith("42/socket.io,")
        assert json.loads(reply[len("42/socket.io,") :]) == ["echo", "raw ✓"]
    finally:
        ws.close()


@pytest.mark.parametrize("transports", [["polling"], ["websocket"]], ids=["polling", "websocket"])
def test_engineio_pings_pass_unbuffered(takgate, fake_ots_factory, ui_root, transports):
    """OTS sets ping_timeout=1: a pong must get back within 1 s, so takgate
    must not buffer WebSocket frames or long-poll responses. Here the server
    pings every second; the connection must survive several pings."""
    ots = fake_ots_factory("--ping-interval", "1", "--ping-timeout", "1")
    gate = takgate(web_config(ots.url, ui_root))
    with sioutil.connected(gate.url("web"), gate.url("web"), transports) as (sio, events):
        sioutil.welcome(events)
        # Observation window (not synchronisation): ~3 ping/pong cycles.
        with pytest.raises(queue.Empty):
            events["disconnect"].get(timeout=3.5)
        assert sio.connected
        sioutil.roundtrip(sio, events)


def test_polling_handshake_headers(web_gate, takgate, fake_ots, ui_root):
    """The polling open packet arrives through takgate with the edge heartbeat's pingTimeout
    (`[socketio] client_timeout`, 20 s) in place of OTS's 1 s, the rest as OTS sent it; with
    `edge_heartbeat = false`, intact."""
    r = sioutil.polling_handshake(web_gate.url("web"), web_gate.url("web"))
    assert r.status_code == 200
    assert r.text.startswith("0{"), r.text
    open_packet = json.loads(r.text[1:])
    assert open_packet["pingTimeout"] == 20000, open_packet
    assert open_packet["pingInterval"] == 25000 and open_packet["sid"], open_packet
    off = takgate(web_config(fake_ots.url, ui_root, "[socketio]\nedge_heartbeat = false\n"))
    r_off = sioutil.polling_handshake(off.url("web"), off.url("web"))
    assert r_off.status_code == 200 and '"pingTimeout":1000' in r_off.text, r_off.text
    r2 = requests.get(f"{web_gate.url('web')}/api/health", timeout=T)
    assert r2.status_code == 200 and r2.json() == {"status": "healthy"}
    assert harness.hostport(web_gate.addr("web"))[0] == "127.0.0.1"


@pytest.mark.nginx
@pytest.mark.parametrize(
    "host_var, works", [("$host", False), ("$http_host", True)], ids=["nginx-host", "nginx-http_host"]
)
@pytest.mark.parametrize("transports", [["polling"], ["websocket"]], ids=["polling", "websocket"])
def test_same_client_through_nginx(fake_ots, tmp_path, host_var, works, transports):
    """Control with a real proxy: the client used above fails behind nginx
    configured as OTS's installer does (`proxy_set_header Host $host`, the
    port is lost) and works with `Host $http_host`. So the takgate test
    really tells a correct proxy from the one takgate replaces."""
    block = f"""
    server {{
        listen 127.0.0.1:{{port}};
        location /socket.io {{
            proxy_http_version 1.1;
            proxy_buffering off;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection "Upgrade";
            proxy_set_header Host {host_var};
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_pass http://127.0.0.1:{fake_ots.port}/socket.io;
        }}
    }}
"""
    ngx = harness.start_nginx(tmp_path / "nginx", block)
    try:
        url = f"http://127.0.0.1:{ngx.port}"
        if works:
            with sioutil.connected(url, url, transports, timeout=T) as (sio, events):
                sioutil.wait_transport(sio, transports[-1])
                sioutil.roundtrip(sio, events)
        else:
            with pytest.raises(socketio.exceptions.ConnectionError):
                with sioutil.connected(url, url, transports, timeout=T):
                    pass
    finally:
        assert ngx.stop() is not None
