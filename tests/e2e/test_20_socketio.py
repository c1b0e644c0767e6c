"""Socket.IO from python-socketio's client, as a browser on takgate's web listener connects: an
Origin equal to takgate's address, the session cookie, namespace /socket.io, polling and
WebSocket. OTS sets no cors_allowed_origins, so engine.io accepts only an Origin that matches the
Host (+ X-Forwarded-Proto) it receives: a 400 "Not an accepted origin" here would mean takgate
changed the Host (as nginx's `Host $host` does by dropping the port)."""

from __future__ import annotations

import pytest

import otslib


def handshake(env, origin, cookies=None):
    return otslib.requests.get(
        env.web + "/socket.io/?EIO=4&transport=polling&t=e2e",
        headers={"Origin": origin} if origin else {},
        cookies=cookies,
        timeout=otslib.T,
    )


def test_polling_handshake_origin_of_takgate_is_accepted(env):
    r = handshake(env, env.web_origin)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert r.text.startswith("0{") and '"sid"' in r.text, r.text[:300]
    assert "websocket" in r.text  # upgrades offered


def test_foreign_origin_is_refused_by_ots(env):
    """Negative control: the origin check is live, so the passes above and below mean something."""
    r = handshake(env, "http://evil.example:8080")
    assert r.status_code in (400, 403), (r.status_code, r.text[:300])


@pytest.mark.parametrize(
    "transports,final",
    [
        (["polling"], "polling"),
        (["websocket"], "websocket"),
        (["polling", "websocket"], "websocket"),
    ],
    ids=["polling", "websocket", "polling-upgrade"],
)
def test_authenticated_client_in_namespace(env, sio_admin, transports, final):
    c = sio_admin(transports)
    assert c.sio.connected
    assert otslib.NS in c.sio.namespaces, c.sio.namespaces
    otslib.harness.wait_until(lambda: c.sio.transport() == final, otslib.T, f"transport {final}")
    # OTS disconnects unauthenticated clients from /socket.io right after connecting
    # (@authenticated_only); a logged-in one stays.
    assert c.disconnects.empty()


def test_unauthenticated_client_is_dropped_by_ots(env):
    """Control for the cookie: without a session OTS answers 41/socket.io (disconnect)."""
    web = otslib.OtsWeb(env.web)
    c = otslib.SioClient(web, env.web_origin, ["polling"])
    try:
        try:
            c.connect()
        except otslib.socketio.exceptions.ConnectionError:
            return  # refused outright: also fine
        c.disconnects.get(timeout=otslib.T)
    finally:
        c.close()
        web.close()
