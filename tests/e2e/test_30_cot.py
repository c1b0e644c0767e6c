"""CoT through takgate's stream listener (mutual TLS, terminated, relayed to OTS's plain port):
a pytak client with a certificate OTS's own CA issued (POST /api/certificate) exchanges CoT with a
plain TCP client on OTS's CoT port, and a logged-in Socket.IO client (OTS's web map) receives the
`eud` and `point` events for both."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import otslib
from otslib import CotConn, callsign_of, sa_event, settle_after_connect, unique


def uid_of(frame: bytes) -> str:
    return ET.fromstring(frame).get("uid")


def test_pytak_over_takgate_exchanges_cot_with_tcp_client(env, admin, sio_admin, conns):
    web_map = sio_admin(["polling", "websocket"])
    username, cert, key = otslib.new_user_with_cert(admin, env, "e2etak")
    tak_uid, tak_cs = unique("E2E-TAK-"), unique("TAK-")
    tcp_uid, tcp_cs = unique("E2E-TCP-"), unique("TCP-")
    frames_before = otslib.metric(env, "takgate_cot_frames_total", listener="cot-tls")

    # B: plain TCP straight on OTS's CoT port (anonymous, __ANON__ group).
    b = CotConn.tcp(env.ots_tcp, "tcp-B")
    conns.append(b)
    settle_after_connect()  # OTS F3
    b.send(sa_event(tcp_uid, tcp_cs, 40.5, -73.5))

    async def scenario():
        a = otslib.PytakClient(otslib.pytak_section(env, cert, key))
        await a.connect()
        try:
            await asyncio.sleep(1.0)  # OTS F3: see otslib.settle_after_connect
            await a.send(sa_event(tak_uid, tak_cs, 41.25, -74.25))
            # A -> takgate -> OTS -> B
            got = await asyncio.to_thread(
                b.wait_frame, lambda f: tak_uid.encode() in f, f"A's SA ({tak_uid})"
            )
            root = ET.fromstring(got)
            assert root.get("uid") == tak_uid
            assert root.find("detail/contact").get("callsign") == tak_cs
            assert root.find("point").get("lat") == "41.25"
            # B -> OTS -> takgate -> A (B is registered: its queues exist since its first SA).
            b.send(sa_event(tcp_uid, tcp_cs, 40.75, -73.75))
            back = await a.recv_until(lambda f: tcp_uid.encode() in f, f"B's SA ({tcp_uid})")
            root = ET.fromstring(back)
            assert root.get("uid") == tcp_uid
            assert root.find("detail/contact").get("callsign") == tcp_cs
        finally:
            await a.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))

    # OTS's web map: `eud` (eud_handler, on the first SA with <contact>) and `point` (cot_parser).
    for cs in (tak_cs, tcp_cs):
        for kind in ("eud", "point"):
            name, data = web_map.wait(lambda n, d, cs=cs, kind=kind: n == kind and callsign_of(d) == cs, f"{kind} {cs}")
            assert name == kind
    # takgate framed and counted what went through it both ways.
    assert otslib.metric(env, "takgate_cot_frames_total", listener="cot-tls") >= frames_before + 2


def test_two_pytak_clients_through_takgate(env, admin):
    """Both ends on takgate's listener, each with its own OTS-issued certificate."""
    _, cert1, key1 = otslib.new_user_with_cert(admin, env, "e2etak")
    _, cert2, key2 = otslib.new_user_with_cert(admin, env, "e2etak")
    uid1, cs1 = unique("E2E-P1-"), unique("P1-")
    uid2, cs2 = unique("E2E-P2-"), unique("P2-")

    async def scenario():
        c1 = otslib.PytakClient(otslib.pytak_section(env, cert1, key1))
        c2 = otslib.PytakClient(otslib.pytak_section(env, cert2, key2))
        try:
            await c1.connect()
            await asyncio.sleep(1.0)  # OTS F3: see otslib.settle_after_connect
            await c1.send(sa_event(uid1, cs1))  # c1 registered (its queues bound)
            await c2.connect()
            await asyncio.sleep(1.0)  # OTS F3
            await c2.send(sa_event(uid2, cs2))
            got = await c1.recv_until(lambda f: uid2.encode() in f, "c2's SA at c1")
            assert uid_of(got) == uid2
            # c1 got c2's SA, so c2 is registered: c1's next CoT reaches c2.
            await c1.send(sa_event(uid1, cs1, 42.0, -75.0))
            got = await c2.recv_until(lambda f: uid1.encode() in f, "c1's SA at c2")
            assert uid_of(got) == uid1
        finally:
            await c1.close()
            await c2.close()

    asyncio.run(asyncio.wait_for(scenario(), 60))
