"""Process and PKI helpers shared by the pytest suite and tests/autobahn/run.py.

Rules kept here: only 127.0.0.1, no fixed ports, no sleeps used as
synchronisation (everything polls a condition under a deadline), and every
network wait has a timeout.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FAKE_OTS = HERE / "fake_ots.py"

POLL = 0.02  # seconds between polls of a condition


class HarnessError(AssertionError):
    pass


def wait_until(cond: Callable[[], object], timeout: float, what: str, alive: Optional[Callable[[], None]] = None):
    """Poll cond() until it returns a truthy value; raise after timeout.
    alive() is called on each round and should raise if a process died."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if alive is not None:
            alive()
        if time.monotonic() >= deadline:
            raise HarnessError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(POLL)


def tail(path: Path, n: int = 4000) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError:
        return "<no log>"
    return data[-n:].decode("utf-8", "replace")


def hostport(addr: str) -> tuple[str, int]:
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


def can_connect(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    """Only for programs that cannot take a passed-in listener (nginx): bind
    port 0, read the port, close. Racy by nature; callers retry on EADDRINUSE."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, sig=signal.SIGTERM, timeout: float = 10) -> Optional[int]:
    """Send sig and wait; SIGKILL after timeout. Returns the exit code, or None
    if the process had to be killed."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        return None


# --------------------------------------------------------------------------- fake OTS


@dataclass
class FakeOts:
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> Optional[int]:
        return stop_process(self.proc, signal.SIGTERM, timeout=10)


def start_fake_ots(workdir: Path, *extra_args: str, python: str = sys.executable, timeout: float = 15) -> FakeOts:
    workdir.mkdir(parents=True, exist_ok=True)
    port_file = workdir / "fake_ots.port"
    log = workdir / "fake_ots.log"
    port_file.unlink(missing_ok=True)
    with open(log, "ab") as logf:
        proc = subprocess.Popen(
            [python, str(FAKE_OTS), "--port-file", str(port_file), *extra_args],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
        )

    def alive():
        if proc.poll() is not None:
            raise HarnessError(f"fake_ots exited with {proc.returncode}:\n{tail(log)}")

    try:
        text = wait_until(
            lambda: port_file.exists() and port_file.read_text().strip(),
            timeout,
            "fake_ots port file",
            alive,
        )
    except BaseException:
        stop_process(proc, timeout=5)
        raise
    return FakeOts(proc, int(text), log)


# --------------------------------------------------------------------------- takgate


def takgate_bin() -> Path:
    value = os.environ.get("TAKGATE_BIN")
    if not value:
        raise HarnessError("TAKGATE_BIN is not set (tests/run sets it to the freshly built binary)")
    path = Path(value)
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise HarnessError(f"TAKGATE_BIN={value} is not an executable file")
    return path


@dataclass
class Takgate:
    proc: subprocess.Popen
    http: dict
    admin: str
    log: Path
    config: Path
    bound: Path
    exit_code: Optional[int] = field(default=None)
    stream: dict = field(default_factory=dict)

    def addr(self, listener: str) -> str:
        return self.http[listener]

    def port(self, listener: str) -> int:
        return hostport(self.http[listener])[1]

    def stream_addr(self, listener: str) -> tuple[str, int]:
        return hostport(self.stream[listener])

    def url(self, listener: str, scheme: str = "http") -> str:
        return f"{scheme}://{self.http[listener]}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin}"

    def stop(self, timeout: float = 10) -> Optional[int]:
        """SIGTERM; returns the exit code, or None if it did not exit in time."""
        if self.exit_code is None:
            self.exit_code = stop_process(self.proc, signal.SIGTERM, timeout=timeout)
        return self.exit_code


def start_takgate(workdir: Path, config_text: str, timeout: float = 10, env: Optional[dict] = None) -> Takgate:
    """Write the config, start $TAKGATE_BIN --config F --bound-addrs OUT.json and
    wait (deadline `timeout`) for OUT.json."""
    binary = takgate_bin()
    workdir.mkdir(parents=True, exist_ok=True)
    n = len(list(workdir.glob("takgate-*.toml")))
    config = workdir / f"takgate-{n}.toml"
    bound = workdir / f"takgate-{n}.bound.json"
    log = workdir / f"takgate-{n}.log"
    config.write_text(config_text)
    bound.unlink(missing_ok=True)
    proc_env = dict(os.environ)
    proc_env.setdefault("RUST_LOG", "info")
    proc_env.setdefault("RUST_BACKTRACE", "1")
    if env:
        proc_env.update(env)
    with open(log, "ab") as logf:
        proc = subprocess.Popen(
            [str(binary), "--config", str(config), "--bound-addrs", str(bound)],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            env=proc_env,
            cwd=str(workdir),
        )

    def alive():
        if proc.poll() is not None:
            raise HarnessError(f"takgate exited with {proc.returncode} before writing {bound.name}:\n{tail(log)}")

    def read_bound():
        if not bound.exists():
            return None
        try:
            return json.loads(bound.read_text())
        except ValueError:
            return None  # written atomically per contract, but be lenient while polling

    try:
        addrs = wait_until(read_bound, timeout, f"takgate to write {bound}", alive)
    except BaseException:
        stop_process(proc, timeout=5)
        raise
    if not isinstance(addrs.get("http"), dict) or "admin" not in addrs:
        stop_process(proc, timeout=5)
        raise HarnessError(f"bound-addrs JSON lacks 'http' map or 'admin': {addrs!r}")
    return Takgate(proc, addrs["http"], addrs["admin"], log, config, bound, stream=addrs.get("stream", {}))


def toml_str(value) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def web_config(upstream_url: str, ui_root: Path, extra: str = "") -> str:
    """A config with one plain `web` listener in front of `upstream_url`."""
    return f"""
client_cert_header = "X-Ssl-Cert"

[upstream]
url = {toml_str(upstream_url)}

[admin]
listen = "127.0.0.1:0"

[[http]]
name = "web"
listen = "127.0.0.1:0"
profile = "web"
ui_root = {toml_str(ui_root)}
{extra}
"""


# --------------------------------------------------------------------------- PKI


@dataclass
class Pki:
    """A CA, a server certificate for 127.0.0.1/localhost, and client
    certificates: RSA-2048 and EC P-256 signed by the CA, plus one from a
    foreign CA. Paths are PEM files."""

    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    clients: dict  # name -> (cert path, key path)

    def client(self, name: str) -> tuple[str, str]:
        cert, key = self.clients[name]
        return str(cert), str(key)

    def client_pem(self, name: str) -> bytes:
        return Path(self.clients[name][0]).read_bytes()


def make_pki(d: Path) -> Pki:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    d.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before = now - datetime.timedelta(hours=1)
    not_after = now + datetime.timedelta(days=30)

    def name(cn: str, org: str = "takgate-tests") -> x509.Name:
        return x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "OpenTAKServer"),
                x509.NameAttribute(NameOID.COMMON_NAME, cn),
            ]
        )

    def write_key(key, path: Path):
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
        os.chmod(path, 0o600)

    def make_ca(cn: str):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(name(cn))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return key, cert

    def leaf(ca_key, ca_cert, key, cn: str, server: bool):
        b = (
            x509.CertificateBuilder()
            .subject_name(name(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if server:
            b = b.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        return b.sign(ca_key, hashes.SHA256())

    def pem(cert) -> bytes:
        return cert.public_bytes(serialization.Encoding.PEM)

    ca_key, ca_cert = make_ca("takgate-test-ca")
    (d / "ca.pem").write_bytes(pem(ca_cert))

    srv_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    write_key(srv_key, d / "server.key")
    (d / "server.pem").write_bytes(pem(leaf(ca_key, ca_cert, srv_key, "opentakserver", server=True)))

    clients = {}
    for cname, key in (
        ("rsa", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        ("ec", ec.generate_private_key(ec.SECP256R1())),
    ):
        write_key(key, d / f"client-{cname}.key")
        (d / f"client-{cname}.pem").write_bytes(pem(leaf(ca_key, ca_cert, key, f"user-{cname}", server=False)))
        clients[cname] = (d / f"client-{cname}.pem", d / f"client-{cname}.key")

    other_key, other_ca = make_ca("some-other-ca")
    fkey = ec.generate_private_key(ec.SECP256R1())
    write_key(fkey, d / "client-foreign.key")
    (d / "client-foreign.pem").write_bytes(pem(leaf(other_key, other_ca, fkey, "user-foreign", server=False)))
    clients["foreign"] = (d / "client-foreign.pem", d / "client-foreign.key")

    return Pki(d, d / "ca.pem", d / "server.pem", d / "server.key", clients)


# --------------------------------------------------------------------------- nginx


def nginx_bin() -> str:
    for cand in ("/usr/sbin/nginx", "/usr/bin/nginx"):
        if os.access(cand, os.X_OK):
            return cand
    raise HarnessError("nginx is not installed (tests/run installs Debian's nginx)")


@dataclass
class Nginx:
    proc: subprocess.Popen
    port: int
    prefix: Path

    def stop(self) -> Optional[int]:
        # SIGQUIT = graceful shutdown of master + workers
        return stop_process(self.proc, signal.SIGQUIT, timeout=10)


def start_nginx(prefix: Path, server_block: str, attempts: int = 5, timeout: float = 10) -> Nginx:
    """Run Debian's nginx in the foreground (daemon off) with its own prefix,
    pid file, logs and temp dirs. `server_block` is an nginx `server {}` block
    with `{port}` where the listen port goes.

    nginx cannot be handed an already-bound listener, so a free port is found
    by binding 127.0.0.1:0 and closing it, then passed in; if another process
    takes it in between, nginx fails with EADDRINUSE and we retry."""
    binary = nginx_bin()
    prefix.mkdir(parents=True, exist_ok=True)
    for sub in ("logs", "tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    last_err = ""
    for attempt in range(attempts):
        port = free_port()
        error_log = prefix / "logs" / f"error-{attempt}.log"
        conf = prefix / "nginx.conf"
        user_line = "user root;" if os.geteuid() == 0 else ""
        conf.write_text(
            f"""
daemon off;
{user_line}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {error_log} info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/logs/access.log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
{server_block.replace("{port}", str(port))}
}}
"""
        )
        with open(prefix / "logs" / f"stderr-{attempt}.log", "wb") as errf:
            proc = subprocess.Popen(
                [binary, "-p", str(prefix), "-c", str(conf), "-e", str(error_log)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=errf,
            )

        def dead():
            return proc.poll() is not None

        try:
            wait_until(lambda: dead() or can_connect("127.0.0.1", port), timeout, "nginx to listen")
        except BaseException:
            stop_process(proc, timeout=5)
            raise
        if not dead():
            return Nginx(proc, port, prefix)
        last_err = tail(error_log) + tail(prefix / "logs" / f"stderr-{attempt}.log")
        if "Address already in use" not in last_err:
            break
    raise HarnessError(f"nginx failed to start:\n{last_err}")


# --------------------------------------------------------------------------- misc


def header_values(raw_headers: list, name: str) -> list:
    """All values of header `name` (case-insensitive) from fake_ots's raw list."""
    return [v for k, v in raw_headers if k.lower() == name.lower()]


def promtool_bin() -> str:
    for cand in ("/usr/bin/promtool", "/usr/local/bin/promtool"):
        if os.access(cand, os.X_OK):
            return cand
    raise HarnessError("promtool is not installed (tests/run installs Debian's prometheus)")
