"""CoT through takgate's stream listener (mutual TLS, terminated, relayed to OTS's plain port):
a pytak client with a certificate OTS's own CA issued (POST /api/certificate) exchanges CoT with a
plain TCP client on OTS's CoT port, and a logged-in Socket.IO client (OTS's web map) receives the
`eud` and `point` events for both."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import otslib
from otslib import CotConn, callsign_of, sa_event


def uid_of(frame: bytes) -> str:
    return ET.fromstring(frame).get("uid")


def test_pytak_over_takgate_exchanges_cot_with_tcp_client(env, admin, sio_admin, conns):
    web_map = sio_admin(["polling", "websocket"])
    username, cert, key = otslib.new_user_with_cert(admin, env, "e2etak")
    frames_before = otslib.metric(env, "takgate_cot_frames_total", listener="cot-tls")

    # B: plain TCP straight on OTS's CoT port (anonymous, __ANON__ group), registered by OTS.
    b, tcp_uid, tcp_cs = otslib.registered_conn(lambda: CotConn.tcp(env.ots_tcp, "tcp-B"), "TCP")
    conns.append(b)

    async def scenario():
        # A: pytak through takgate, its first SA sent after the F3 wait and registered by OTS.
        a, tak_uid, tak_cs = await otslib.registered_pytak(env, cert, key, "TAK")
        try:
            # A -> takgate -> OTS -> B (A repeats its SA until B has it, as ATAK does)
            got = await otslib.relay_until_seen_async(
                lambda: a.send(sa_event(tak_uid, tak_cs)),
                lambda t: asyncio.to_thread(b.poll_frame, lambda f: tak_uid.encode() in f, t),
                f"A's SA at B ({tak_uid})",
            )
            root = ET.fromstring(got)
            assert root.get("uid") == tak_uid
            assert root.find("detail/contact").get("callsign") == tak_cs
            assert root.find("point").get("lat") == "41.0"
            # B -> OTS -> takgate -> A
            back = await otslib.relay_until_seen_async(
                lambda: asyncio.to_thread(b.send, sa_event(tcp_uid, tcp_cs, 40.75, -73.75)),
                lambda t: a.poll(lambda f: tcp_uid.encode() in f and b'lat="40.75"' in f, t),
                f"B's SA at A ({tcp_uid})",
            )
            root = ET.fromstring(back)
            assert root.get("uid") == tcp_uid
            assert root.find("detail/contact").get("callsign") == tcp_cs
            assert root.find("point").get("lat") == "40.75"
            return tak_cs
        finally:
            await a.close()

    tak_cs = asyncio.run(asyncio.wait_for(scenario(), 90))

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

    async def scenario():
        c1, uid1, cs1 = await otslib.registered_pytak(env, cert1, key1, "P1")
        try:
            c2, uid2, cs2 = await otslib.registered_pytak(env, cert2, key2, "P2")
            try:
                got = await otslib.relay_until_seen_async(
                    lambda: c2.send(sa_event(uid2, cs2)),
                    lambda t: c1.poll(lambda f: uid2.encode() in f, t),
                    "c2's SA at c1",
                )
                assert uid_of(got) == uid2
                got = await otslib.relay_until_seen_async(
                    lambda: c1.send(sa_event(uid1, cs1, 42.0, -75.0)),
                    lambda t: c2.poll(lambda f: uid1.encode() in f and b'lat="42.0"' in f, t),
                    "c1's SA at c2",
                )
                assert uid_of(got) == uid1
            finally:
                await c2.close()
        finally:
            await c1.close()

    asyncio.run(asyncio.wait_for(scenario(), 120))
