"""A real TAK client, pytak (snstac/pytak), through takgate's CoT gateway.

pytak connects over mutual TLS to a `[[stream]]` listener in `terminate` mode,
with a client certificate from the test CA, and verifies takgate's server
certificate (IP SAN 127.0.0.1) against the test CA: no verification is turned
off. Behind takgate a stand-in for OTS's plain CoT port (`Sink`, an asyncio
server on 127.0.0.1:0) records what arrives and writes events back.

- Every event pytak sends (built with pytak's own helpers) reaches the sink
  byte for byte, in order, each well-formed XML with the uid/type sent.
- Events written by the sink land in pytak's RX queue.
- A client certificate from a foreign CA is refused during the handshake:
  nothing reaches the sink and /metrics counts
  takgate_stream_refused_total{listener="cot",reason="unknown_ca"} 1.
- /metrics stays promtool-clean after this traffic.

Each case runs once with takgate's default versions (TLS 1.3 is negotiated)
and once with TLS 1.2 only, since pytak behaves differently on the two: with
1.3 its connect succeeds before takgate has judged the certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import ssl
import subprocess
import xml.etree.ElementTree as ET
from configparser import ConfigParser, SectionProxy
from dataclasses import dataclass, field
from typing import Callable, Optional

import pytest
import requests

import pytak

import harness
from harness import toml_str

T = 10  # seconds: deadline of any single network wait
SCENARIO_DEADLINE = 60  # seconds: a whole asyncio scenario

TLS_VERSIONS = [
    pytest.param(None, "TLSv1.3", id="tls-default"),
    pytest.param("1.2", "TLSv1.2", id="tls12-only"),
]


# --------------------------------------------------------------------------- takgate


def gateway_config(pki: harness.Pki, sink_port: int, version: Optional[str]) -> str:
    versions = f"versions = [{toml_str(version)}]\n" if version else ""
    return f"""
[upstream]
url = "http://127.0.0.1:1"

[admin]
listen = "127.0.0.1:0"

[[stream]]
name = "cot"
listen = "127.0.0.1:0"
upstream = "127.0.0.1:{sink_port}"
mode = "terminate"

[stream.tls]
cert = {toml_str(pki.server_cert)}
key = {toml_str(pki.server_key)}
client_ca = {toml_str(pki.ca)}
{versions}"""


def listening_socket() -> socket.socket:
    """The sink's listener, bound before takgate starts so its port can go in the config."""
    sock = socket.create_server(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$")


def scrape(gate: harness.Takgate) -> str:
    r = requests.get(f"{gate.admin_url}/metrics", timeout=T)
    assert r.status_code == 200, r.status_code
    return r.text


def metric(text: str, name: str, **labels: str) -> Optional[float]:
    """Sum of `name`'s samples whose labels include `labels`; None if there is none."""
    total = None
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"unparseable sample line: {line!r}"
        if m.group(1) != name:
            continue
        have = dict(LABEL.findall(m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total = (total or 0.0) + float(m.group(3))
    return total


def wait_metric(gate: harness.Takgate, name: str, want: float, **labels: str) -> str:
    """Poll /metrics (deadline T) until the metric equals `want`; returns the scrape."""
    seen = {}

    def check():
        seen["text"] = scrape(gate)
        seen["value"] = metric(seen["text"], name, **labels)
        return seen["value"] == want

    try:
        harness.wait_until(check, T, f"{name}{labels} == {want}")
    except harness.HarnessError as e:
        raise AssertionError(f"{e}; last value {seen.get('value')!r}") from None
    return seen["text"]


def promtool_clean(text: str):
    res = subprocess.run(
        [harness.promtool_bin(), "check", "metrics"], input=text.encode(), capture_output=True, timeout=30
    )
    out = (res.stdout + res.stderr).decode(errors="replace")
    assert res.returncode == 0 and out == "", f"promtool exit {res.returncode}:\n{out}"


# --------------------------------------------------------------------------- fake OTS CoT port


@dataclass
class SinkConn:
    writer: asyncio.StreamWriter
    data: bytearray = field(default_factory=bytearray)
    eof: bool = False


class Sink:
    """OTS's plain CoT port: records every connection takgate opens, can write back.
    On end of stream it closes its side too, as OTS does."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.conns: list[SinkConn] = []
        self.changed = asyncio.Condition()

    async def __aenter__(self) -> "Sink":
        self.server = await asyncio.start_server(self._serve, sock=self.sock)
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        for c in self.conns:
            c.writer.close()
        await asyncio.wait_for(self.server.wait_closed(), T)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        conn = SinkConn(writer)
        async with self.changed:
            self.conns.append(conn)
            self.changed.notify_all()
        try:
            while chunk := await reader.read(65536):
                async with self.changed:
                    conn.data += chunk
                    self.changed.notify_all()
        except ConnectionError:
            pass
        async with self.changed:
            conn.eof = True
            self.changed.notify_all()
        writer.close()

    def describe(self) -> str:
        conns = (f"conn {i}: {len(c.data)} bytes, eof={c.eof}" for i, c in enumerate(self.conns))
        return "; ".join(conns) or "no connections"

    async def wait(self, cond: Callable[[], object], what: str, timeout: float = T):
        async with self.changed:
            try:
                await asyncio.wait_for(self.changed.wait_for(cond), timeout)
            except TimeoutError:
                raise AssertionError(
                    f"timed out after {timeout}s waiting for the sink to {what} ({self.describe()})"
                ) from None


# --------------------------------------------------------------------------- pytak


def pytak_config(addr: tuple[str, int], cert: str, key: str, ca) -> SectionProxy:
    cp = ConfigParser(interpolation=None)
    cp["pytak"] = {
        "COT_URL": f"tls://{addr[0]}:{addr[1]}",
        "PYTAK_TLS_CLIENT_CERT": cert,
        "PYTAK_TLS_CLIENT_KEY": key,
        "PYTAK_TLS_CLIENT_CAFILE": str(ca),
        # The test sends pytak.hello_event() itself, so the order on the wire is known.
        "PYTAK_NO_HELLO": "1",
    }
    return cp["pytak"]


class PytakClient:
    """pytak's CLITool as a pytak app uses it: setup() opens the TLS connection and
    builds a TXWorker (tx_queue -> socket) and an RXWorker (socket -> rx_queue,
    one item per `</event>`); run() runs them until one fails."""

    def __init__(self, config: SectionProxy):
        self.tool = pytak.CLITool(config)
        self.run: Optional[asyncio.Task] = None
        self.writer = None

    async def connect(self):
        await asyncio.wait_for(self.tool.setup(), T)
        tx = [w for w in self.tool.tasks if isinstance(w, pytak.TXWorker)]
        assert len(tx) == 1, self.tool.tasks
        self.writer = tx[0].writer
        self.run = asyncio.create_task(self.tool.run())

    @property
    def ssl_object(self) -> ssl.SSLObject:
        return self.writer.get_extra_info("ssl_object")

    async def send(self, data: bytes):
        await asyncio.wait_for(self.tool.tx_queue.put(data), T)

    async def recv(self, what: str) -> bytes:
        get = asyncio.ensure_future(self.tool.rx_queue.get())
        done, _ = await asyncio.wait({get, self.run}, timeout=T, return_when=asyncio.FIRST_COMPLETED)
        if get in done:
            return get.result()
        get.cancel()
        if self.run in done:
            raise AssertionError(f"pytak stopped while waiting for {what}: {self._outcome()!r}")
        raise AssertionError(f"timed out after {T}s waiting for pytak to receive {what}")

    async def failure(self) -> BaseException:
        """Waits (deadline T) for run() to end with an error, and returns it."""
        done, _ = await asyncio.wait({self.run}, timeout=T)
        assert done, (
            f"pytak still running {T}s after connecting with a refused certificate "
            "(pytak's RXWorker loops on a clean EOF; takgate should have sent a TLS alert)"
        )
        outcome = self._outcome()
        assert isinstance(outcome, BaseException), f"pytak's run() ended without an error: {outcome!r}"
        return outcome

    def _outcome(self):
        if self.run.cancelled():
            return "cancelled"
        return self.run.exception()

    async def close(self):
        tasks = set(self.tool.running_tasks)
        if self.run is not None:
            tasks.add(self.run)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=T)
        if self.writer is not None:
            self.writer.close()
            # close_notify goes out; takgate answers with its own once OTS has closed too.
            with contextlib.suppress(ssl.SSLError, ConnectionError, TimeoutError):
                await asyncio.wait_for(self.writer.wait_closed(), T)


def run_scenario(coro):
    return asyncio.run(asyncio.wait_for(coro, SCENARIO_DEADLINE))


def split_events(data: bytes) -> list[bytes]:
    """Split a CoT stream after each `</event>`, as OTS and pytak's RXWorker do."""
    parts = data.split(b"</event>")
    assert parts[-1].strip() == b"", f"bytes after the last </event>: {parts[-1][:200]!r}"
    return [p + b"</event>" for p in parts[:-1]]


def parse_event(frame: bytes) -> ET.Element:
    try:
        root = ET.fromstring(frame)
    except ET.ParseError as e:
        raise AssertionError(f"not well-formed XML ({e}): {frame[:300]!r}") from None
    assert root.tag == "event", frame[:300]
    return root


# --------------------------------------------------------------------------- events


UID = "takgate-pytak-1"


def client_events() -> list[bytes]:
    """What a pytak app sends: its hello, a position report, a ping, and an
    event with remarks needing XML escaping (pytak's ElementTree serialization
    writes entity and character references)."""
    remarks_detail = pytak.cot_detail()
    pytak.add_remarks(remarks_detail, ["café", "<&>", "\"quoted\"", "naïve ✓"])
    return [
        pytak.hello_event(UID),
        pytak.gen_cot(
            lat=37.7749, lon=-122.4194, hae=10, ce=5, le=5, uid=UID, stale=60, cot_type="a-f-G-U-C", callsign="PYTAK-1"
        ),
        pytak.gen_cot(uid=f"{UID}-ping", stale=20, cot_type="t-x-c-t"),
        pytak.serialize_cot(
            pytak.cot_event(lat=1.5, lon=2.5, uid=f"{UID}-marker", cot_type="b-m-p-s-m", detail=remarks_detail)
        ),
    ]


def server_events() -> list[bytes]:
    """What OTS relays to a client: another user's position and a ping reply.

    Not pytak's own tak_pong(): ElementTree serializes that childless event as
    `<event ... />`, which pytak's RXWorker (readuntil `</event>`) never sees end."""
    return [
        pytak.gen_cot(
            lat=-33.86, lon=151.21, uid="ANDROID-other-user", stale=60, cot_type="a-f-G-U-C", callsign="OTHER"
        ),
        pytak.gen_cot(uid="takPong", stale=20, cot_type="t-x-c-t-r"),
    ]


def uid_type(frame: bytes) -> tuple[str, str]:
    root = parse_event(frame)
    return root.get("uid"), root.get("type")


# --------------------------------------------------------------------------- tests


@dataclass
class RoundTrip:
    tls_version: str
    cipher: tuple
    server_cn: str
    sent: list
    upstream_conns: int
    upstream_data: bytes
    upstream_eof: bool
    back: list
    received: list


async def roundtrip(sink_sock: socket.socket, addr, pki: harness.Pki, cert_name: str) -> RoundTrip:
    async with Sink(sink_sock) as sink:
        client = PytakClient(pytak_config(addr, *pki.client(cert_name), pki.ca))
        await client.connect()
        try:
            ssl_obj = client.ssl_object
            peer = dict(x[0] for x in ssl_obj.getpeercert()["subject"])
            # takgate connects to OTS once the client's certificate is accepted.
            await sink.wait(lambda: sink.conns, "accept takgate's upstream connection")
            conn = sink.conns[0]
            sent = client_events()
            for ev in sent:
                await client.send(ev)
            total = sum(len(ev) for ev in sent)
            await sink.wait(lambda: len(conn.data) >= total, f"receive {len(sent)} events ({total} bytes)")

            back = server_events()
            conn.writer.write(b"\n".join(back) + b"\n")
            await asyncio.wait_for(conn.writer.drain(), T)
            received = [await client.recv(f"event {i} from the sink") for i in range(len(back))]
        finally:
            await client.close()
        await sink.wait(lambda: conn.eof, "see pytak's end of stream relayed")
        return RoundTrip(
            tls_version=ssl_obj.version(),
            cipher=ssl_obj.cipher(),
            server_cn=peer.get("commonName"),
            sent=sent,
            upstream_conns=len(sink.conns),
            upstream_data=bytes(conn.data),
            upstream_eof=conn.eof,
            back=back,
            received=received,
        )


@pytest.mark.parametrize("version,expected_tls", TLS_VERSIONS)
def test_pytak_events_through_terminate_listener(takgate, pki, version, expected_tls):
    sink_sock = listening_socket()
    gate = takgate(gateway_config(pki, sink_sock.getsockname()[1], version))
    addr = gate.stream_addr("cot")

    rt = run_scenario(roundtrip(sink_sock, addr, pki, "rsa"))

    # pytak verified takgate's certificate (IP SAN) with the test CA and negotiated:
    assert rt.tls_version == expected_tls, rt.cipher
    assert rt.server_cn == "opentakserver"

    # Upstream: one connection carrying every event intact and in order.
    assert rt.upstream_conns == 1
    assert rt.upstream_eof
    frames = split_events(rt.upstream_data)
    assert [uid_type(f) for f in frames] == [uid_type(s) for s in rt.sent]
    assert [uid_type(f) for f in frames] == [
        (UID, "t-x-d-d"),
        (UID, "a-f-G-U-C"),
        (f"{UID}-ping", "t-x-c-t"),
        (f"{UID}-marker", "b-m-p-s-m"),
    ]
    assert frames == rt.sent, "events were altered on the way to OTS"
    assert rt.upstream_data == b"".join(rt.sent)
    marker = parse_event(frames[3])
    assert marker.find("detail/remarks").text == 'café <&> "quoted" naïve ✓'
    position = parse_event(frames[1])
    assert position.find("detail/contact").get("callsign") == "PYTAK-1"
    assert position.find("point").get("lat") == "37.7749"

    # Downstream: pytak's RX queue got both events, whole, in order (takgate drops
    # whitespace between frames, so compare stripped).
    assert [r.strip() for r in rt.received] == rt.back
    assert [uid_type(r) for r in rt.received] == [("ANDROID-other-user", "a-f-G-U-C"), ("takPong", "t-x-c-t-r")]

    text = wait_metric(gate, "takgate_stream_sessions_closed_total", 1, listener="cot", reason="closed")
    assert metric(text, "takgate_cot_frames_total", listener="cot", direction="to_upstream") == len(rt.sent)
    assert metric(text, "takgate_cot_frames_total", listener="cot", direction="to_client") == len(rt.back)
    assert metric(text, "takgate_cot_frame_errors_total", listener="cot") in (None, 0.0)
    assert metric(text, "takgate_stream_refused_total", listener="cot") in (None, 0.0)
    assert metric(text, "takgate_stream_bytes_total", listener="cot", direction="to_upstream") == len(rt.upstream_data)
    promtool_clean(text)


@dataclass
class Refusal:
    error: BaseException
    failed_in_connect: bool
    upstream: list  # (data, eof) per sink connection after the good client


async def refused_then_accepted(sink_sock, addr, pki: harness.Pki, gate: harness.Takgate) -> Refusal:
    async with Sink(sink_sock) as sink:
        foreign = PytakClient(pytak_config(addr, *pki.client("foreign"), pki.ca))
        failed_in_connect = False
        try:
            try:
                await foreign.connect()
            except ssl.SSLError as e:
                # TLS 1.2: takgate judges the certificate before the handshake ends.
                error, failed_in_connect = e, True
            else:
                # TLS 1.3: the client is done with its handshake first; the alert
                # arrives after, while pytak sends and reads.
                await foreign.send(pytak.gen_cot(uid="foreign-user", cot_type="a-h-G"))
                error = await foreign.failure()
        finally:
            await foreign.close()

        # The refusal is counted before any upstream connection would be opened.
        await asyncio.to_thread(
            wait_metric, gate, "takgate_stream_refused_total", 1, listener="cot", reason="unknown_ca"
        )

        # The listener still serves a client from the right CA; its connection is
        # the sink's first and only one, so the foreign client's never reached it.
        good = PytakClient(pytak_config(addr, *pki.client("ec"), pki.ca))
        await good.connect()
        event = pytak.gen_cot(uid="good-user", cot_type="a-f-G")
        try:
            await good.send(event)
            await sink.wait(
                lambda: sink.conns and len(sink.conns[0].data) >= len(event), "receive the good client's event"
            )
        finally:
            await good.close()
        await sink.wait(lambda: all(c.eof for c in sink.conns), "see every connection end")
        return Refusal(error, failed_in_connect, [(bytes(c.data), c.eof) for c in sink.conns])


@pytest.mark.parametrize("version,expected_tls", TLS_VERSIONS)
def test_pytak_foreign_ca_refused(takgate, pki, version, expected_tls):
    sink_sock = listening_socket()
    gate = takgate(gateway_config(pki, sink_sock.getsockname()[1], version))
    addr = gate.stream_addr("cot")

    res = run_scenario(refused_then_accepted(sink_sock, addr, pki, gate))

    # pytak sees takgate's alert: "[SSL: TLSV1_ALERT_UNKNOWN_CA] tlsv1 alert unknown ca".
    assert isinstance(res.error, (ssl.SSLError, ConnectionResetError)), repr(res.error)
    if isinstance(res.error, ssl.SSLError):
        assert "UNKNOWN_CA" in str(res.error).upper(), repr(res.error)
    assert res.failed_in_connect == (expected_tls == "TLSv1.2"), repr(res.error)

    assert len(res.upstream) == 1, f"expected only the good client's upstream connection: {res.upstream!r}"
    data, eof = res.upstream[0]
    assert eof
    assert [uid_type(f) for f in split_events(data)] == [("good-user", "a-f-G")]
    assert b"foreign-user" not in data

    text = scrape(gate)
    assert metric(text, "takgate_stream_refused_total", listener="cot", reason="unknown_ca") == 1
    assert metric(text, "takgate_stream_refused_total", listener="cot") == 1
    assert metric(text, "takgate_stream_connections_total", listener="cot") == 2
    assert metric(text, "takgate_cot_frames_total", listener="cot", direction="to_upstream") == 1
    promtool_clean(text)
