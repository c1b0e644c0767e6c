"""OTS's API process stopped mid-test (only `opentakserver`; PostgreSQL, RabbitMQ, cot_parser,
eud_handler and takgate keep running): takgate keeps serving the UI, answers /api with its JSON
502 within a second, and /readyz turns 503. OTS started again: everything recovers without
restarting takgate. Runs last (file name order): it takes the API away."""

from __future__ import annotations

import os
import time

import requests

import otslib
from otslib import T


def readyz(env) -> requests.Response:
    return requests.get(f"{env.admin_url}/readyz", timeout=T)


def test_api_outage_and_recovery(env, admin, conns):
    takgate_pid = env.takgate_pid
    assert readyz(env).status_code == 200
    _, cert, key = otslib.new_user_with_cert(admin, env, "e2eout")

    env.ots_ctl("stop", "opentakserver")
    try:
        # The UI is takgate's own: still served.
        r = requests.get(env.web + "/", timeout=T)
        assert r.status_code == 200 and "OpenTAK Server through takgate" in r.text

        # /api: takgate's JSON 502, fast (connection refused by the dead upstream).
        t0 = time.monotonic()
        r = requests.get(env.web + "/api/health", timeout=T)
        took = time.monotonic() - t0
        assert r.status_code == 502, (r.status_code, r.text[:300])
        assert r.headers["Content-Type"].startswith("application/json"), r.headers
        body = r.json()
        assert body["status"] == 502 and body.get("error"), body
        assert env.ots_api.split("//")[1] in body.get("upstream", ""), body
        assert took < 1.0, f"/api answered after {took:.2f}s"
        r = requests.post(env.web + "/api/login", json={"username": "x", "password": "y"}, timeout=T)
        assert r.status_code == 502 and r.json()["status"] == 502
        r = requests.get(env.web + "/socket.io/?EIO=4&transport=polling", headers={"Origin": env.web_origin}, timeout=T)
        assert r.status_code == 502

        # /readyz: 503 naming the upstream.
        otslib.harness.wait_until(lambda: readyz(env).status_code == 503, 5, "/readyz 503")
        assert readyz(env).headers.get("Content-Type", "").startswith("application/json")

        # CoT: with OTS's API down the active-user check cannot be made; on_unavailable =
        # "fail-closed" refuses new sessions (once a refresh has failed, within `refresh`).
        before = otslib.metric(env, "takgate_stream_refused_total", listener="cot-tls", reason="identity_unavailable")
        outcome = {}

        def refused_now():
            try:
                outcome["how"] = otslib.refused_on_stream(env, cert, key, timeout=1.0)
                return True
            except AssertionError:
                return False

        otslib.harness.wait_until(refused_now, 10, "a new CoT session to be refused while OTS's API is down")
        otslib.harness.wait_until(
            lambda: (
                otslib.metric(env, "takgate_stream_refused_total", listener="cot-tls", reason="identity_unavailable")
                > before
            ),
            T,
            "refused{reason=identity_unavailable}",
        )
    finally:
        env.ots_ctl("start", "opentakserver")  # returns once OTS's own /api/health is 200

    # Recovery, same takgate process.
    otslib.harness.wait_until(
        lambda: requests.get(env.web + "/api/health", timeout=T).status_code == 200, 30, "/api/health 200 via takgate"
    )
    otslib.harness.wait_until(lambda: readyz(env).status_code == 200, 30, "/readyz 200")
    assert env.takgate_pid == takgate_pid
    os.kill(takgate_pid, 0)  # still the same, running process

    # Login, REST and Socket.IO work again through the same takgate.
    web = otslib.OtsWeb(env.web)
    web.login("administrator", "password")
    assert web.get("/api/me").json()["username"] == "administrator"
    sio = otslib.SioClient(web, env.web_origin, ["polling", "websocket"]).connect()
    try:
        assert sio.sio.connected
        # And CoT through takgate reaches OTS and the web map again.
        uid, cs = otslib.unique("E2E-REC-"), otslib.unique("REC-")
        conn = otslib.CotConn.tls(env.cot_addr, env.ca_pem, cert, key, name="after-restart")
        conns.append(conn)
        otslib.settle_after_connect()  # OTS F3

        def on_map(t):
            try:
                return sio.wait(lambda n, d: n in ("eud", "point") and otslib.callsign_of(d) == cs, "", t)
            except AssertionError:
                return None

        otslib.relay_until_seen(lambda: conn.send(otslib.sa_event(uid, cs)), on_map, f"event for {cs} on the map")
    finally:
        sio.close()
        web.close()
