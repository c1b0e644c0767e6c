"""python-socketio client helpers that behave like OTS's browser UI:
namespace /socket.io on path /socket.io, and an explicit Origin header."""

from __future__ import annotations

import queue
import uuid
from contextlib import contextmanager
from typing import Optional

import requests
import socketio

import harness

NS = "/socket.io"
TIMEOUT = 10.0


@contextmanager
def connected(base_url: str, origin: str, transports: list, verify=True, timeout: float = TIMEOUT):
    """Connect a socketio.Client and yield (client, events) where events is a
    dict of queue.Queue for "welcome", "echo" and "disconnect".

    The same Origin is sent on polling requests and on the WebSocket
    handshake (websocket-client's automatic Origin is suppressed, otherwise it
    would send a second one)."""
    http = requests.Session()
    http.verify = verify
    sio = socketio.Client(
        reconnection=False,
        request_timeout=timeout,
        http_session=http,
        websocket_extra_options={"suppress_origin": True},
    )
    events = {name: queue.Queue() for name in ("welcome", "echo", "disconnect")}
    sio.on("welcome", lambda data: events["welcome"].put(data), namespace=NS)
    sio.on("echo", lambda data: events["echo"].put(data), namespace=NS)
    sio.on("disconnect", lambda *a: events["disconnect"].put(a), namespace=NS)
    try:
        sio.connect(
            base_url,
            headers={"Origin": origin},
            transports=transports,
            namespaces=[NS],
            socketio_path="socket.io",
            wait_timeout=timeout,
        )
        yield sio, events
    finally:
        sio.disconnect()
        http.close()


def roundtrip(sio: socketio.Client, events: dict, timeout: float = TIMEOUT, size: int = 2000) -> None:
    """emit("echo") must come back as an "echo" event, and call() must be acked."""
    payload = {"id": uuid.uuid4().hex, "text": "héllo wörld ✓", "blob": "x" * size}
    sio.emit("echo", payload, namespace=NS)
    got = events["echo"].get(timeout=timeout)
    assert got == payload
    payload2 = {"id": uuid.uuid4().hex, "n": [1, 2, 3]}
    ack = sio.call("echo", payload2, namespace=NS, timeout=timeout)
    assert ack == payload2
    got2 = events["echo"].get(timeout=timeout)
    assert got2 == payload2


def wait_transport(sio: socketio.Client, transport: str, timeout: float = TIMEOUT) -> None:
    harness.wait_until(lambda: sio.transport() == transport, timeout, f"transport == {transport}")


def welcome(events: dict, timeout: float = TIMEOUT) -> dict:
    return events["welcome"].get(timeout=timeout)


def polling_handshake(base_url: str, origin: Optional[str], timeout: float = TIMEOUT, **kw) -> requests.Response:
    """The first engine.io request a browser makes."""
    headers = dict(kw.pop("headers", {}))
    if origin is not None:
        headers["Origin"] = origin
    return requests.get(
        f"{base_url}/socket.io/?EIO=4&transport=polling&t=test",
        headers=headers,
        timeout=timeout,
        **kw,
    )
