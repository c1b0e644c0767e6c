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


def namespace_connect(env, cookies) -> str:
    """engine.io polling by hand: handshake, connect to namespace /socket.io, read the answer."""
    http = otslib.requests.Session()
    http.cookies.update(cookies)
    h = {"Origin": env.web_origin}
    url = env.web + "/socket.io/?EIO=4&transport=polling"
    try:
        r = http.get(url + "&t=a", headers=h, timeout=otslib.T)
        assert r.status_code == 200, (r.status_code, r.text[:200])
        sid = otslib.json.loads(r.text[1:])["sid"]
        r = http.post(f"{url}&sid={sid}&t=b", data="40/socket.io,", headers=h, timeout=otslib.T)
        assert r.status_code == 200 and r.text.lower() == "ok", (r.status_code, r.text[:200])
        r = http.get(f"{url}&sid={sid}&t=c", headers=h, timeout=otslib.T)
        assert r.status_code == 200, (r.status_code, r.text[:200])
        return r.text
    finally:
        http.close()


def test_namespace_connect_needs_the_session_cookie(env, admin):
    """OTS's @authenticated_only connect handler: with the session cookie (passed through by
    takgate on polling requests) the namespace connect is accepted; without it OTS answers
    41 (disconnect) right after 40."""
    with_cookie = namespace_connect(env, admin.http.cookies)
    assert with_cookie.startswith("40/socket.io,") and "41/socket.io" not in with_cookie, with_cookie
    without = namespace_connect(env, {})
    assert "41/socket.io" in without, without
