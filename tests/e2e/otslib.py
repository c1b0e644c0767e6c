"""Clients for the real OpenTAK Server behind takgate: REST (login, users, certificates), Socket.IO,
CoT over plain TCP (OTS's own port) and over mutual TLS (takgate's stream listener), HTTPS with
client certificates, takgate's metrics, and CRLs signed with OTS's CA key.

Every network wait has a timeout; conditions are polled under a deadline (harness.wait_until).
The one fixed wait is OTS's connect race (ots-run.md F3), in `settle_after_connect`.
"""

from __future__ import annotations

import datetime
import http.client
import json
import os
import queue
import re
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import requests
import socketio

import harness

T = 10.0  # seconds: the deadline of any single network wait
NS = "/socket.io"  # OTS's Socket.IO namespace
E2E = Path(__file__).resolve().parent
CA_PASSWORD = b"atakatak"  # OTS_CA_PASSWORD default
BROWSER = E2E / "browser"  # the Chromium drivers (playwright-core) and the test page
CHROMIUM = "/usr/bin/chromium"  # Debian's, installed by ots-up


# ----------------------------------------------------------------------------------- state


@dataclass
class Env:
    """What tests/e2e/ots-up wrote to state.json."""

    state: dict

    @classmethod
    def load(cls, path: Path) -> "Env":
        return cls(json.loads(Path(path).read_text()))

    @property
    def run(self) -> Path:
        return Path(self.state["run"])

    def http_addr(self, name: str) -> str:
        return self.state["takgate"]["http"][name]

    @property
    def web(self) -> str:
        return f"http://{self.http_addr('web')}"

    @property
    def web_origin(self) -> str:
        return self.web

    @property
    def cot_addr(self) -> tuple[str, int]:
        return harness.hostport(self.state["takgate"]["stream"]["cot-tls"])

    @property
    def reorig_addr(self) -> tuple[str, int]:
        """takgate's `reoriginate` CoT listener (in front of OTS's eud_handler --ssl)."""
        return harness.hostport(self.state["takgate"]["stream"]["cot-reorig"])

    @property
    def ots_ssl(self) -> tuple[str, int]:
        """OTS's own TLS CoT listener (eud_handler --ssl), reached directly (no takgate)."""
        host, port = self.state["ots_ssl"]
        return host, int(port)

    @property
    def admin_url(self) -> str:
        return f"http://{self.state['takgate']['admin']}"

    @property
    def ots_api(self) -> str:
        return self.state["ots_api"]

    @property
    def ots_tcp(self) -> tuple[str, int]:
        host, port = self.state["ots_tcp"]
        return host, int(port)

    @property
    def ca(self) -> Path:
        return Path(self.state["ots_ca"])

    @property
    def ca_pem(self) -> Path:
        return self.ca / "ca.pem"

    @property
    def crl(self) -> Path:
        """The CRL takgate's CoT listener loads ([stream.tls] crl)."""
        return Path(self.state["crl"])

    def user_cert(self, username: str) -> tuple[str, str]:
        d = self.ca / "certs" / username
        return str(d / f"{username}.pem"), str(d / f"{username}.nopass.key")

    @property
    def takgate_pid(self) -> int:
        pid, _ = (self.run / "pids" / "takgate.pid").read_text().split()
        return int(pid)

    def ots_ctl(self, *args: str, timeout: float = 150) -> str:
        env = dict(os.environ, OTS_E2E_RUN=str(self.run))
        res = subprocess.run([str(E2E / "ots-ctl"), *args], env=env, capture_output=True, text=True, timeout=timeout)
        assert res.returncode == 0, f"ots-ctl {' '.join(args)} failed ({res.returncode}):\n{res.stdout}{res.stderr}"
        return res.stdout + res.stderr


def unique(prefix: str) -> str:
    """OTS needs a unique callsign per UID (ots-run.md F4); usernames must be unique too."""
    return f"{prefix}{uuid.uuid4().hex[:8]}"


# ----------------------------------------------------------------------------------- REST


class OtsWeb:
    """A logged-in browser-like session against takgate's web listener (cookies + X-XSRF-Token)."""

    def __init__(self, base: str):
        self.base = base.rstrip("/")
        self.http = requests.Session()
        self.http.headers["Accept"] = "application/json"
        self.csrf: Optional[str] = None
        self.login_json: Optional[dict] = None

    def get(self, path: str, **kw) -> requests.Response:
        kw.setdefault("timeout", T)
        kw.setdefault("allow_redirects", False)
        return self.http.get(self.base + path, **kw)

    def post(self, path: str, body=None, csrf: bool = True, **kw) -> requests.Response:
        kw.setdefault("timeout", T)
        kw.setdefault("allow_redirects", False)
        headers = dict(kw.pop("headers", {}))
        if csrf and self.csrf:
            headers["X-XSRF-Token"] = self.csrf
        return self.http.post(self.base + path, json=body, headers=headers, **kw)

    def put(self, path: str, body=None, **kw) -> requests.Response:
        kw.setdefault("timeout", T)
        headers = dict(kw.pop("headers", {}))
        if self.csrf:
            headers["X-XSRF-Token"] = self.csrf
        return self.http.put(self.base + path, json=body, headers=headers, **kw)

    def login(self, username: str, password: str) -> dict:
        """What OTS's UI does: GET /api/login for a CSRF token, then POST /api/login."""
        r = self.get("/api/login")
        assert r.status_code == 200, (r.status_code, r.text[:300])
        self.csrf = r.json()["response"]["csrf_token"]
        r = self.post(
            "/api/login?include_auth_token",
            {"username": username, "password": password, "submit": "Login", "csrf_token": self.csrf},
        )
        assert r.status_code == 200, (r.status_code, r.text[:300])
        self.login_json = r.json()
        # Flask-Security rotates the CSRF token on login; the XSRF-TOKEN cookie carries the new one.
        self.csrf = self.http.cookies.get("XSRF-TOKEN") or self.login_json["response"].get("csrf_token") or self.csrf
        return self.login_json

    def ok(self, r: requests.Response, what: str) -> dict:
        assert r.status_code == 200, f"{what}: {r.status_code} {r.text[:500]}"
        body = r.json()
        if isinstance(body, dict) and "success" in body:
            assert body["success"] is True, f"{what}: {body}"
        return body

    # Administrator operations (OTS's UI calls these).
    def add_user(self, username: str, password: str, roles=("user",)) -> None:
        self.ok(
            self.post(
                "/api/user/add",
                {"username": username, "password": password, "confirm_password": password, "roles": list(roles)},
            ),
            f"add user {username}",
        )

    def issue_certificate(self, username: str) -> None:
        self.ok(self.post("/api/certificate", {"username": username}), f"certificate for {username}")

    def deactivate(self, username: str) -> None:
        self.ok(self.post("/api/user/deactivate", {"username": username}), f"deactivate {username}")

    def activate(self, username: str) -> None:
        self.ok(self.post("/api/user/activate", {"username": username}), f"activate {username}")

    def add_group(self, name: str) -> None:
        self.ok(self.post("/api/groups", {"name": name, "description": "takgate e2e"}), f"add group {name}")

    def add_to_group(self, username: str, group: str, direction: str = "IN") -> None:
        self.ok(
            self.put("/api/groups", {"users": [username], "group_name": group, "direction": direction}),
            f"add {username} to {group}",
        )

    def close(self):
        self.http.close()


def new_user_with_cert(admin: OtsWeb, env: Env, prefix: str, password: str = "E2e-Passw0rd!") -> tuple[str, str, str]:
    """A new OTS user and a certificate from OTS's own CA (POST /api/certificate).
    Returns (username, cert path, key path)."""
    username = unique(prefix)
    admin.add_user(username, password)
    admin.issue_certificate(username)
    cert, key = env.user_cert(username)
    harness.wait_until(lambda: Path(cert).exists() and Path(key).exists(), T, f"OTS to write {cert}")
    return username, cert, key


# ----------------------------------------------------------------------------------- Socket.IO


class SioClient:
    """python-socketio's client as OTS's web UI connects: same origin (an explicit browser-like
    Origin equal to takgate's address on polling and WebSocket), session cookie, namespace
    /socket.io. Collects `eud` and `point` events."""

    EVENTS = ("eud", "point", "marker", "alert")

    def __init__(self, web: OtsWeb, origin: str, transports: list):
        self.web = web
        self.origin = origin
        self.transports = transports
        self.events: "queue.Queue[tuple[str, object]]" = queue.Queue()
        self.seen: list[tuple[str, object]] = []
        self.disconnects = queue.Queue()
        self.sio = socketio.Client(
            reconnection=False,
            request_timeout=T,
            http_session=web.http,
            websocket_extra_options={"suppress_origin": True},
        )
        for name in self.EVENTS:
            self.sio.on(name, self._handler(name), namespace=NS)
        self.sio.on("disconnect", lambda *a: self.disconnects.put(a), namespace=NS)

    def _handler(self, name):
        return lambda data=None: self.events.put((name, data))

    def connect(self) -> "SioClient":
        self.sio.connect(
            self.web.base,
            headers={"Origin": self.origin},
            transports=self.transports,
            namespaces=[NS],
            socketio_path="socket.io",
            wait_timeout=T,
        )
        return self

    def wait(self, cond: Callable[[str, object], bool], what: str, timeout: float = T):
        """The first event (old or new) for which cond(name, data) holds."""
        for name, data in self.seen:
            if cond(name, data):
                return name, data
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                names = [(n, callsign_of(d)) for n, d in self.seen][-20:]
                raise AssertionError(f"no Socket.IO event {what} within {timeout}s; last seen: {names}")
            try:
                item = self.events.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(item)
            if cond(*item):
                return item

    def close(self):
        self.sio.disconnect()


def callsign_of(data) -> Optional[str]:
    if isinstance(data, dict):
        return data.get("callsign")
    return None


# ----------------------------------------------------------------------------------- CoT


def cot_time(delta: float = 0) -> str:
    t = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=delta)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def sa_event(uid: str, callsign: str, lat: float = 41.0, lon: float = -74.0) -> bytes:
    """An EUD position report ("SA") that OTS registers as an EUD: <contact callsign> plus <takv>.
    No XML declaration and no leading whitespace (OTS splits its stream on </event>)."""
    return (
        f'<event version="2.0" uid="{uid}" type="a-f-G-U-C" how="m-g" time="{cot_time()}" '
        f'start="{cot_time()}" stale="{cot_time(300)}">'
        f'<point lat="{lat}" lon="{lon}" hae="10" ce="9999999" le="9999999"/>'
        f'<detail><contact callsign="{callsign}" endpoint="*:-1:stcp"/>'
        f'<__group name="Cyan" role="Team Member"/>'
        f'<takv device="takgate-e2e" platform="takgate-e2e" os="linux" version="1.0"/></detail></event>'
    ).encode()


def settle_after_connect():
    """OTS's connect race (ots-run.md F3): eud_handler opens its RabbitMQ channel in a thread after
    accepting; an SA that arrives before the channel is open registers the EUD without its queues,
    and the client then never receives anything. OTS gives no signal for "channel open", so every
    CoT client waits ~1 s after connecting before its first SA. This is the only fixed wait in the
    suite, documented as the OTS behaviour it works around."""
    time.sleep(1.0)


RESEND = 0.5  # seconds between repeats of a CoT a test waits for


def relay_until_seen(send: Callable[[], None], seen: Callable[[float], object], what: str, timeout: float = T):
    """send(), then seen(RESEND) (a falsy result: not there yet), again and again until seen or the
    deadline. Why repeat: OTS's eud_handler publishes to RabbitMQ from the socket thread while
    pika's SelectConnection IO loop runs in another thread, and pika is not thread-safe; a publish
    can stay in pika's buffer until the next write on that connection. A TAK client repeats its SA
    anyway (ATAK every few seconds); the tests repeat theirs every RESEND seconds."""
    deadline = time.monotonic() + timeout
    while True:
        send()
        got = seen(max(0.05, min(RESEND, deadline - time.monotonic())))
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not seen within {timeout}s (sent every {RESEND}s)")


def ots_queues() -> dict:
    """RabbitMQ's queues and their consumer counts (OTS declares and consumes one queue per
    registered EUD uid and one per callsign)."""
    res = subprocess.run(
        ["rabbitmqctl", "-q", "list_queues", "name", "consumers"], capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, f"rabbitmqctl list_queues: {res.stderr}"
    queues = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            queues[parts[0]] = int(parts[1])
    return queues


def registered(uid: str, timeout: float = 5.0) -> bool:
    """True once OTS's eud_handler consumes the EUD's queue for `uid`: it had its RabbitMQ channel
    open when the first SA arrived (F3), and its queue declare, binds and basic_consume reached
    RabbitMQ. (eud_handler calls pika's SelectConnection from the socket thread while the IO loop
    runs in another, so those frames can also sit unsent for a while; a queue that exists but has
    no consumer is such a case.)"""
    try:
        harness.wait_until(lambda: ots_queues().get(uid, 0) >= 1, timeout, f"a consumer on OTS queue {uid}")
        return True
    except harness.HarnessError:
        return False


def registered_conn(open_conn: Callable[[], "CotConn"], prefix: str, attempts: int = 3):
    """Open a CoT connection, send its first SA after the F3 wait, and check that OTS registered
    it (its queue is consumed). OTS's race can still lose on a busy machine (the 1 s is a guess
    OTS gives no signal for); then that connection is deaf for good, so open a new one. This is a
    precondition of the receiving tests, not what they test. Returns (conn, uid, callsign)."""
    for _ in range(attempts):
        conn = open_conn()
        settle_after_connect()
        uid, callsign = unique(f"E2E-{prefix}-"), unique(f"{prefix}-")
        conn.send(sa_event(uid, callsign))
        if registered(uid):
            return conn, uid, callsign
        conn.close()
    raise AssertionError(f"OTS did not register a {prefix} connection in {attempts} attempts (ots-run.md F3)")


class CotConn:
    """A blocking CoT connection (plain TCP or TLS) that splits what it reads on </event>."""

    def __init__(self, sock: socket.socket, name: str):
        self.sock = sock
        self.name = name
        self.buf = b""
        self.frames: list[bytes] = []
        self.closed = False

    @classmethod
    def tcp(cls, addr: tuple[str, int], name: str = "tcp") -> "CotConn":
        s = socket.create_connection(addr, timeout=T)
        return cls(s, name)

    @classmethod
    def tls(
        cls, addr: tuple[str, int], ca: Path, cert: Optional[str], key: Optional[str], name: str = "tls"
    ) -> "CotConn":
        s = socket.create_connection(addr, timeout=T)
        try:
            ts = client_context(ca, cert, key).wrap_socket(s, server_hostname="opentakserver")
        except BaseException:
            s.close()
            raise
        return cls(ts, name)

    def send(self, data: bytes):
        self.sock.sendall(data)

    def _read(self, timeout: float) -> bool:
        """One recv; False on timeout. Sets .closed on EOF or a connection error."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            chunk = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return False
        except (ssl.SSLError, ConnectionError, OSError) as e:
            self.closed = True
            self.close_reason = repr(e)
            return True
        if not chunk:
            self.closed = True
            self.close_reason = "eof"
            return True
        self.buf += chunk
        while b"</event>" in self.buf:
            frame, _, self.buf = self.buf.partition(b"</event>")
            self.frames.append(frame.lstrip() + b"</event>")
        return True

    def wait_frame(self, pred: Callable[[bytes], bool], what: str, timeout: float = T) -> bytes:
        start = 0
        deadline = time.monotonic() + timeout
        while True:
            for f in self.frames[start:]:
                if pred(f):
                    return f
            start = len(self.frames)
            left = deadline - time.monotonic()
            if self.closed:
                raise AssertionError(f"{self.name}: connection closed ({self.close_reason}) before {what}")
            if left <= 0:
                raise AssertionError(
                    f"{self.name}: nothing matching {what} within {timeout}s ({len(self.frames)} frames)"
                )
            self._read(left)

    def poll_frame(self, pred: Callable[[bytes], bool], timeout: float) -> Optional[bytes]:
        """The first frame (already read or arriving within `timeout`) matching pred, else None.
        Raises if the connection closes."""
        try:
            return self.wait_frame(pred, "", timeout)
        except AssertionError:
            if self.closed:
                raise
            return None

    def wait_closed(self, timeout: float) -> float:
        """Seconds until the peer closed the connection; AssertionError if it stays open."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        while not self.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: still open after {timeout}s")
            self._read(left)
        return time.monotonic() - t0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def client_context(ca: Path, cert: Optional[str], key: Optional[str]) -> ssl.SSLContext:
    """Verify the server against OTS's CA. OTS's server certificate is CN=opentakserver with no
    SAN for 127.0.0.1 (ots-run.md §6), so the name is not checked; the chain is."""
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.check_hostname = False
    if cert:
        ctx.load_cert_chain(cert, key)
    return ctx


def refused_on_stream(env: Env, cert: str, key: str, timeout: float = T) -> str:
    """Connect to takgate's CoT listener with this certificate and expect to be refused: the TLS
    handshake fails, or (TLS 1.3, where the client finishes first) the first read gets an alert
    or EOF. Sends an SA in between, which must not be relayed. Returns how it was refused."""
    try:
        conn = CotConn.tls(env.cot_addr, env.ca_pem, cert, key, name="refused")
    except (ssl.SSLError, ConnectionError) as e:
        return f"handshake: {e!r}"
    try:
        try:
            conn.send(sa_event(unique("REFUSED-"), unique("REFUSED-")))
        except (ssl.SSLError, ConnectionError, OSError) as e:
            return f"send: {e!r}"
        conn.wait_closed(timeout)
        return f"after handshake: {conn.close_reason}"
    finally:
        conn.close()


# ----------------------------------------------------------------------------------- HTTPS


@dataclass
class Resp:
    status: int
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def https(
    addr: str,
    method: str,
    path: str,
    ca: Path,
    cert: Optional[str] = None,
    key: Optional[str] = None,
    headers: Optional[dict] = None,
    body: Optional[bytes] = None,
) -> Resp:
    host, port = harness.hostport(addr)
    conn = http.client.HTTPSConnection(host, port, timeout=T, context=client_context(ca, cert, key))
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return Resp(r.status, {k.lower(): v for k, v in r.getheaders()}, r.read())
    finally:
        conn.close()


def escaped_cert(pem_path: str) -> str:
    """The certificate as nginx's $ssl_client_escaped_cert (URL-encoded PEM)."""
    return urllib.parse.quote(Path(pem_path).read_text(), safe="")


# ----------------------------------------------------------------------------------- metrics

LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$")


def metric(env: Env, name: str, **labels: str) -> float:
    """Sum of `name`'s samples on takgate's /metrics whose labels include `labels` (0 if none)."""
    r = requests.get(f"{env.admin_url}/metrics", timeout=T)
    assert r.status_code == 200, r.status_code
    total = 0.0
    for line in r.text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        if not m or m.group(1) != name:
            continue
        have = dict(LABEL.findall(m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


# ----------------------------------------------------------------------------------- certificates


def revoke(env: Env, cert_path: str) -> None:
    """Revoke a certificate the way an operator of OTS's CA would: a new CRL, signed with OTS's CA
    key (ca-do-not-share.key, password atakatak), listing it next to whatever the CRL already
    revokes, written over takgate's CRL file atomically. takgate follows the file by itself
    (stat every 2 s): no restart, no signal."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    ca_cert = x509.load_pem_x509_certificate(env.ca_pem.read_bytes())
    ca_key = serialization.load_pem_private_key((env.ca / "ca-do-not-share.key").read_bytes(), CA_PASSWORD)
    target = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - datetime.timedelta(minutes=1))
        .next_update(now + datetime.timedelta(days=1))
    )
    old = env.crl.read_bytes()
    existing = x509.load_pem_x509_crl(old) if b"BEGIN X509 CRL" in old else x509.load_der_x509_crl(old)
    try:
        number = existing.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
    except x509.ExtensionNotFound:
        number = 1
    builder = builder.add_extension(x509.CRLNumber(number), critical=False)
    serials = {r.serial_number for r in existing}
    for r in existing:
        builder = builder.add_revoked_certificate(r)
    if target.serial_number not in serials:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(target.serial_number).revocation_date(now).build()
        )
    crl = builder.sign(ca_key, hashes.SHA256())
    tmp = env.crl.with_suffix(".crl.tmp")
    tmp.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, env.crl)


def foreign_cert(d: Path, cn: str, ca_cn: str = "Some-Other-CA") -> tuple[str, str]:
    """A client certificate for CN=cn from a CA that is not OTS's (OTS's subject layout; the CA's
    CN is ca_cn, which may be OTS's own CA name)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn_: str) -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "WW"),
                x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "XX"),
                x509.NameAttribute(NameOID.LOCALITY_NAME, "YY"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ZZ"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "OpenTAKServer"),
                x509.NameAttribute(NameOID.COMMON_NAME, cn_),
            ]
        )

    ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ca_name = name(ca_cn)
    # (Its own certificate is never needed: only the key signs, and no one trusts it.)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = d / f"{cn}.pem", d / f"{cn}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


def csr_for(cn: str) -> tuple[bytes, object]:
    """A CSR as ATAK sends it to /Marti/api/tls/signClient/v2 (PEM body), and its key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ZZ"),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "OpenTAKServer"),
                    x509.NameAttribute(NameOID.COMMON_NAME, cn),
                ]
            )
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM), key


# ----------------------------------------------------------------------------------- pytak


def pytak_section(env: Env, cert: str, key: str, addr: Optional[tuple[str, int]] = None):
    """pytak's config for takgate's CoT listener (or `addr`) with an OTS-issued certificate. The
    server is verified against OTS's CA; only the host name is not (OTS's certificate has no
    127.0.0.1 SAN)."""
    from configparser import ConfigParser

    host, port = addr or env.cot_addr
    cp = ConfigParser(interpolation=None)
    cp["pytak"] = {
        "COT_URL": f"tls://{host}:{port}",
        "PYTAK_TLS_CLIENT_CERT": cert,
        "PYTAK_TLS_CLIENT_KEY": key,
        "PYTAK_TLS_CLIENT_CAFILE": str(env.ca_pem),
        "PYTAK_TLS_DONT_CHECK_HOSTNAME": "1",
        # The test sends its own SA first (OTS registers the EUD from it), after the F3 wait.
        "PYTAK_NO_HELLO": "1",
    }
    return cp["pytak"]


class PytakClient:
    """pytak's CLITool as a pytak app uses it: setup() opens the TLS connection and starts a
    TXWorker (tx_queue -> socket) and an RXWorker (socket -> rx_queue, one item per </event>)."""

    def __init__(self, section):
        import pytak

        self.pytak = pytak
        self.tool = pytak.CLITool(section)
        self.run = None
        self.writers: list = []
        self.received: list[bytes] = []

    async def connect(self):
        import asyncio

        await asyncio.wait_for(self.tool.setup(), T)
        # The socket's writer, kept now: CLITool.run() empties tool.tasks once it starts them.
        self.writers = [w.writer for w in self.tool.tasks if getattr(w, "writer", None) is not None]
        self.run = asyncio.create_task(self.tool.run())

    async def send(self, data: bytes):
        import asyncio

        await asyncio.wait_for(self.tool.tx_queue.put(data), T)

    async def recv_until(self, pred: Callable[[bytes], bool], what: str, timeout: float = T) -> bytes:
        import asyncio

        for f in self.received:
            if pred(f):
                return f
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(
                    f"pytak: nothing matching {what} within {timeout}s ({len(self.received)} received)"
                )
            get = asyncio.ensure_future(self.tool.rx_queue.get())
            done, _ = await asyncio.wait({get, self.run}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            if get in done:
                frame = get.result()
                self.received.append(frame)
                if pred(frame):
                    return frame
                continue
            get.cancel()
            if self.run in done:
                raise AssertionError(f"pytak stopped while waiting for {what}: {self.run.exception()!r}")

    async def poll(self, pred: Callable[[bytes], bool], timeout: float) -> Optional[bytes]:
        try:
            return await self.recv_until(pred, "", timeout)
        except AssertionError as e:
            if "pytak stopped" in str(e):
                raise
            return None

    async def close(self):
        import asyncio
        import contextlib

        tasks = set(self.tool.running_tasks)
        if self.run is not None:
            tasks.add(self.run)
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=T)
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), T)


async def registered_pytak(
    env: Env,
    cert: str,
    key: str,
    prefix: str,
    attempts: int = 3,
    addr: Optional[tuple[str, int]] = None,
    is_registered: Callable[[str], bool] = None,
):
    """pytak's counterpart of registered_conn: returns (client, uid, callsign) once OTS has
    registered the client's first SA (its queue is consumed). `addr`: default takgate's
    terminate listener (cot-tls). `is_registered(uid)`: default `registered` (rabbitmqctl)."""
    import asyncio

    is_registered = is_registered or registered

    for _ in range(attempts):
        client = PytakClient(pytak_section(env, cert, key, addr))
        await client.connect()
        await asyncio.sleep(1.0)  # OTS F3: see settle_after_connect
        uid, callsign = unique(f"E2E-{prefix}-"), unique(f"{prefix}-")
        await client.send(sa_event(uid, callsign))
        if await asyncio.to_thread(is_registered, uid):
            return client, uid, callsign
        await client.close()
    raise AssertionError(f"OTS did not register a pytak {prefix} client in {attempts} attempts (ots-run.md F3)")


async def relay_until_seen_async(send, seen, what: str, timeout: float = T):
    """relay_until_seen for asyncio: `send` and `seen(timeout)` are coroutine functions."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        await send()
        got = await seen(max(0.05, min(RESEND, deadline - loop.time())))
        if got:
            return got
        if loop.time() >= deadline:
            raise AssertionError(f"{what}: not seen within {timeout}s (sent every {RESEND}s)")


# ----------------------------------------------------------------------------------- RabbitMQ


class GroupProbe:
    """The test's own queues on OTS's RabbitMQ `groups` exchange (a topic exchange app.py declares),
    one per routing key (`<group>.OUT`, `__ANON__.OUT`): where cot_parser publishes each CoT after
    deciding its groups (cot_parser.py: a user's IN groups -> `<group>.OUT`; no user or no IN
    group -> `__ANON__.OUT`; a disconnected user's t-x-d-d -> each of its OUT groups). Each message
    is OTS's JSON {"uid": <sender's uid>, "cot": <the event>}. The queues are exclusive and
    auto-delete: they go with the connection. Not thread-safe in itself: a lock serialises calls."""

    def __init__(self, routing_keys):
        import threading

        import pika

        self.lock = threading.Lock()
        self.conn = pika.BlockingConnection(
            pika.ConnectionParameters(
                host="127.0.0.1",
                port=5672,
                credentials=pika.PlainCredentials("guest", "guest"),
                heartbeat=0,  # the test drains it at its own pace; no heartbeats to miss
                socket_timeout=T,
                stack_timeout=T,
                blocked_connection_timeout=T,
            )
        )
        self.ch = self.conn.channel()
        self.ch.exchange_declare("groups", exchange_type="topic", durable=True, passive=True)
        self.queues: dict[str, str] = {}
        self.seen: dict[str, list[tuple[str, str]]] = {}
        for key in routing_keys:
            q = self.ch.queue_declare("", exclusive=True, auto_delete=True).method.queue
            self.ch.queue_bind(q, "groups", routing_key=key)
            self.queues[key] = q
            self.seen[key] = []

    def drain(self) -> None:
        with self.lock:
            for key, q in self.queues.items():
                while True:
                    method, _props, body = self.ch.basic_get(q, auto_ack=True)
                    if method is None:
                        break
                    try:
                        msg = json.loads(body)
                    except ValueError:
                        msg = {"uid": None, "cot": body.decode("utf-8", "replace")}
                    self.seen[key].append((msg.get("uid") or "", msg.get("cot") or ""))

    def consumers(self, queue: str) -> int:
        """Consumers on `queue` (0 if it does not exist): a passive declare on a channel of its
        own, since RabbitMQ closes the channel when the queue is missing. Cheaper than
        rabbitmqctl when several clients register at once."""
        import pika

        with self.lock:
            ch = self.conn.channel()
            try:
                return ch.queue_declare(queue, passive=True).method.consumer_count
            except pika.exceptions.ChannelClosedByBroker:
                return 0
            finally:
                if ch.is_open:
                    ch.close()

    def registered(self, uid: str, timeout: float = 5.0) -> bool:
        """`registered` (a consumer on OTS's queue for `uid`) through this AMQP connection."""
        try:
            harness.wait_until(lambda: self.consumers(uid) >= 1, timeout, f"a consumer on OTS queue {uid}")
            return True
        except harness.HarnessError:
            return False

    def uids(self, key: str) -> set:
        """Sender uids seen on `key` so far (drain first)."""
        return {uid for uid, _ in self.seen[key]}

    def has(self, key: str, uid: str, cot_type: Optional[str] = None) -> bool:
        return any(
            u == uid and (cot_type is None or f'type="{cot_type}"' in cot) for u, cot in self.seen[key]
        )

    def close(self) -> None:
        with self.lock:
            try:
                self.conn.close()
            except Exception:
                pass


# ------------------------------------------------------------------------- child processes


class JsonLines:
    """A child process (a browser driver, `loadtest link`) that prints one JSON object per line on
    stdout, read one at a time, every read under a deadline."""

    def __init__(self, argv: list[str], cwd: Optional[Path] = None):
        self.proc = subprocess.Popen(
            argv,
            cwd=str(cwd) if cwd else None,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: "list[dict]" = []
        self.cond = threading.Condition()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, args=(self.proc.stdout, True), daemon=True).start()
        threading.Thread(target=self._read, args=(self.proc.stderr, False), daemon=True).start()

    def _read(self, stream, is_json):
        for line in stream:
            if not is_json:
                self.stderr.append(line)
                continue
            try:
                msg = json.loads(line)
            except ValueError:
                msg = {"event": "noise", "line": line}
            with self.cond:
                self.lines.append(msg)
                self.cond.notify_all()
        with self.cond:
            self.lines.append({"event": "eof"})
            self.cond.notify_all()

    def next(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i, msg in enumerate(self.lines):
                    if msg.get("event") != "noise":
                        return self.lines.pop(i)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{' '.join(map(str, self.proc.args[:2]))} said nothing for {timeout}s; stderr: {''.join(self.stderr)[-2000:]}"
                    )
                self.cond.wait(left)

    def send(self, obj: dict):
        self.proc.stdin.write(json.dumps(obj) + "\n")
        self.proc.stdin.flush()

    def signal(self, sig: int):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def close(self, sig: Optional[int] = None):
        """Closes stdin (the drivers end on EOF), or sends `sig` (SIGTERM for `loadtest link`),
        and waits 15 s for the exit before a SIGKILL."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        if sig is not None:
            self.signal(sig)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
