"""Tests of the scripts the pods run inside stock images (base/ots-init/ in the OTS image,
base/postgres-backup.sh in the postgis image).

Run with a Python that has PyYAML (the OTS images ship it): python init_scripts_test.py
"""

import http.server
import json
import os
import secrets
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
INIT = os.path.join(HERE, "..", "base", "ots-init")
WRITE = os.path.join(INIT, "write_config.py")
LISTENING = os.path.join(INIT, "listening.py")
ADMIN = os.path.join(INIT, "admin_password.py")
BACKUP = os.path.join(HERE, "..", "base", "postgres-backup.sh")
EUD_SSL = os.path.join(INIT, "eud_handler_ssl.py")
# A Python with the real OTS package (tests/e2e's venv); the launcher test is skipped without it.
OTS_PYTHON = os.environ.get("OTS_PYTHON", os.path.join(HERE, "..", "..", ".venv-ots", "bin", "python"))
SKIPPED = []

# pg_dump as the backup script must call it: password from PGPASSFILE only, never an argument.
FAKE_PG_DUMP = """#!/bin/sh
[ -z "${PGPASSWORD:-}" ] || { echo "PGPASSWORD set" >&2; exit 3; }
[ "$(stat -c %a "$PGPASSFILE")" = 600 ] || { echo "pgpass not private" >&2; exit 4; }
grep -Fqx 'postgres:5432:ots:ots:pa\\:ss' "$PGPASSFILE" || { echo "bad pgpass" >&2; exit 5; }
for a in "$@"; do case "$a" in --file=*) out="${a#--file=}" ;; esac; done
[ -n "${FAIL:-}" ] && exit 1
printf 'PGDMP dump of %s\n' "$PGDATABASE" > "$out"
"""
SETTINGS = os.path.join(HERE, "..", "base", "ots-settings.env")

SECRETS = {
    "secret-key": "k" * 64,
    "security-password-salt": "salt-123",
    "security-totp-secret": "JBSWY3DPEHPK3PXP",
    "node-id": "node0123456789abcdef",
    "postgres-password": "p@ss/w:rd %x",
    "ca-password": "0123abcd0123abcd",
}


def settings_env():
    env = {}
    with open(SETTINGS) as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                k, _, v = line.partition("=")
                env[k] = v
    return env


def run(tmp, *args, data=None, secrets=SECRETS, extra=None):
    sdir = os.path.join(tmp, "secrets")
    os.makedirs(sdir, exist_ok=True)
    for f in os.listdir(sdir):
        os.remove(os.path.join(sdir, f))
    for k, v in secrets.items():
        with open(os.path.join(sdir, k), "w") as f:
            f.write(v + "\n")
    env = dict(os.environ, **settings_env(), OTS_SECRETS_DIR=sdir)
    env["OTS_DATA_FOLDER"] = data or os.path.join(tmp, "ots")
    env.update(extra or {})
    return subprocess.run([sys.executable, WRITE, *args], env=env, capture_output=True, text=True, timeout=30)


def test_fresh_config_has_fixed_secrets_and_hosts(tmp):
    r = run(tmp, "--check")
    assert r.returncode == 0, r.stderr
    conf = yaml.safe_load(r.stdout)
    assert conf["SECRET_KEY"] == SECRETS["secret-key"]
    assert conf["SECURITY_PASSWORD_SALT"] == SECRETS["security-password-salt"]
    assert conf["SECURITY_TOTP_SECRETS"] == {1: SECRETS["security-totp-secret"]}
    assert conf["OTS_NODE_ID"] == SECRETS["node-id"]
    # The password is URL-encoded into the SQLAlchemy URI.
    assert conf["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://ots:p%40ss%2Fw%3Ard%20%25x@postgres/ots"
    assert conf["OTS_RABBITMQ_SERVER_ADDRESS"] == "rabbitmq"
    assert conf["OTS_LISTENER_ADDRESS"] == "127.0.0.1" and conf["OTS_LISTENER_PORT"] == 8081
    assert conf["OTS_SSL_STREAMING_PORT"] == 31089 and conf["OTS_TCP_STREAMING_PORT"] == 18088
    # takgate reads the same Secret key (signer_key_password_file) to open OTS's CA key.
    assert conf["OTS_CA_PASSWORD"] == SECRETS["ca-password"]
    # No MediaMTX is deployed: OTS's default (on) is overridden with a YAML boolean.
    assert conf["OTS_MEDIAMTX_ENABLE"] is False
    # OTS reads no such key; it is not written.
    assert "OTS_CERTIFICATE_ENROLLMENT_PORT" not in conf


def test_mediamtx_flag_must_be_a_boolean(tmp):
    r = run(tmp, "--check", extra={"OTS_MEDIAMTX_ENABLE": "maybe"})
    assert r.returncode != 0 and "OTS_MEDIAMTX_ENABLE" in r.stderr, r.stderr


def make_ca_key(data, password):
    """An encrypted PKCS#8 CA key where OTS keeps it, as `openssl req -passout` writes it."""
    ca = os.path.join(data, "ca")
    os.makedirs(ca, exist_ok=True)
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-aes-256-cbc", "-pass", "pass:" + password,
         "-out", os.path.join(ca, "ca-do-not-share.key")],
        check=True, capture_output=True, timeout=30,
    )


def test_existing_ca_key_opened_by_the_secret_passes(tmp):
    data = os.path.join(tmp, "ots")
    make_ca_key(data, SECRETS["ca-password"])
    r = run(tmp, data=data)
    assert r.returncode == 0, r.stderr
    assert "OTS_CA_PASSWORD" in r.stdout and SECRETS["ca-password"] not in r.stdout + r.stderr


def test_existing_ca_key_with_another_password_stops_the_pod(tmp):
    data = os.path.join(tmp, "ots")
    make_ca_key(data, "atakatak")
    r = run(tmp, data=data)
    assert r.returncode != 0 and "ca-password does not open" in r.stderr, (r.returncode, r.stderr)
    assert not os.path.exists(os.path.join(data, "config.yml")), "config.yml written anyway"
    assert SECRETS["ca-password"] not in r.stdout + r.stderr and "atakatak" in r.stderr


def test_ca_password_a_shell_would_mangle_fails(tmp):
    r = run(tmp, "--check", secrets=dict(SECRETS, **{"ca-password": "a b;rm -rf x"}))
    assert r.returncode != 0 and "ca-password" in r.stderr and "a b;rm" not in r.stderr


def test_rewrite_keeps_other_keys_and_is_private(tmp):
    data = os.path.join(tmp, "ots")
    os.makedirs(data)
    with open(os.path.join(data, "config.yml"), "w") as f:
        yaml.safe_dump({"OTS_ENABLE_EMAIL": True, "SECRET_KEY": "old", "OTS_NODE_ID": SECRETS["node-id"]}, f)
    r = run(tmp, data=data)
    assert r.returncode == 0, r.stderr
    for value in SECRETS.values():
        assert value not in r.stdout + r.stderr, "a secret value was printed"
    assert "SECRET_KEY" in r.stdout and "OTS_NODE_ID" not in r.stdout.split("changed keys:")[1]
    path = os.path.join(data, "config.yml")
    with open(path) as f:
        conf = yaml.safe_load(f)
    assert conf["OTS_ENABLE_EMAIL"] is True
    assert conf["SECRET_KEY"] == SECRETS["secret-key"]
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [n for n in os.listdir(data) if n.startswith(".config.yml.")] == []
    again = run(tmp, data=data)
    assert again.returncode == 0 and "changed keys: none" in again.stdout, again.stdout


def test_missing_secret_fails_and_names_it(tmp):
    r = run(tmp, "--check", secrets={k: v for k, v in SECRETS.items() if k != "security-totp-secret"})
    assert r.returncode != 0 and "security-totp-secret" in r.stderr, (r.returncode, r.stderr)


def test_empty_secret_fails(tmp):
    r = run(tmp, "--check", secrets=dict(SECRETS, **{"secret-key": "  "}))
    assert r.returncode != 0 and "secret-key" in r.stderr and "empty" in r.stderr


def test_bad_port_fails(tmp):
    r = run(tmp, "--check", extra={"OTS_SSL_STREAMING_PORT": "eighty"})
    assert r.returncode != 0 and "OTS_SSL_STREAMING_PORT" in r.stderr


def test_non_mapping_config_fails(tmp):
    data = os.path.join(tmp, "ots")
    os.makedirs(data)
    with open(os.path.join(data, "config.yml"), "w") as f:
        f.write("- just\n- a list\n")
    r = run(tmp, data=data)
    assert r.returncode != 0 and "not a YAML mapping" in r.stderr


def test_listening_sees_a_listener_and_not_a_closed_port(tmp):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    port = s.getsockname()[1]
    try:
        r = subprocess.run([sys.executable, LISTENING, str(port)], timeout=10)
        assert r.returncode == 0
    finally:
        s.close()
    r = subprocess.run([sys.executable, LISTENING, str(port)], timeout=10)
    assert r.returncode == 1
    r = subprocess.run([sys.executable, LISTENING, "x"], capture_output=True, timeout=10)
    assert r.returncode != 0


class FakeOts(http.server.ThreadingHTTPServer):
    """OTS's login (Flask-Security: JSON, session cookie, CSRF token) and its administrator
    password reset (/api/user/password/reset) as OTS 1.7.14 answers them, on 127.0.0.1:0."""

    def __init__(self, password="password", healthy=True, honour_change=True):
        self.password, self.healthy, self.honour_change = password, healthy, honour_change
        self.sessions, self.changes = {}, 0
        super().__init__(("127.0.0.1", 0), FakeOtsHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __exit__(self, *exc):
        self.shutdown()
        return super().__exit__(*exc)


class FakeOtsHandler(http.server.BaseHTTPRequestHandler):
    def answer(self, status, body, cookie=None):
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        if cookie:
            self.send_header("Set-Cookie", f"session={cookie}; HttpOnly; Path=/")
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        if self.path == "/api/health" and self.server.healthy:
            return self.answer(200, {"status": "healthy"})
        return self.answer(503, {})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv = self.server
        if self.path == "/api/login":
            if body == {"username": "administrator", "password": srv.password}:
                sid, token = secrets.token_hex(8), secrets.token_hex(8)
                srv.sessions[sid] = token
                return self.answer(200, {"response": {"csrf_token": token}}, cookie=sid)
            return self.answer(400, {"response": {"errors": ["invalid"]}})
        if self.path == "/api/user/password/reset":
            sid = (self.headers.get("Cookie") or "").removeprefix("session=")
            if srv.sessions.get(sid) is None:
                return self.answer(401, {"response": {"errors": ["You must sign in"]}})
            if body.get("username") != "administrator" or len(body.get("new_password", "")) < 8:
                return self.answer(400, {"success": False, "error": "invalid"})
            srv.changes += 1
            if srv.honour_change:
                srv.password = body["new_password"]
            return self.answer(200, {"success": True})
        return self.answer(404, {})

    def log_message(self, *a):
        pass


def admin(tmp, ots, password="0123456789abcdef0123456789abcdef"):
    path = os.path.join(tmp, "admin-password")
    with open(path, "w") as f:
        f.write(password + "\n")
    return subprocess.run([sys.executable, ADMIN, path, ots.url()], capture_output=True, text=True, timeout=30)


def test_admin_default_password_replaced_by_the_secret(tmp):
    with FakeOts() as ots:
        r = admin(tmp, ots)
        assert r.returncode == 0, r.stdout + r.stderr
        assert ots.password == "0123456789abcdef0123456789abcdef" and ots.changes == 1
        assert "0123456789abcdef" not in r.stdout + r.stderr  # never logged
        r = admin(tmp, ots)  # the next start: nothing to change
        assert r.returncode == 0 and ots.changes == 1, r.stdout


def test_admin_probe_fails_while_the_default_still_logs_in(tmp):
    with FakeOts(honour_change=False) as ots:
        r = admin(tmp, ots)
        assert r.returncode == 1 and "still logs in" in r.stdout, r.stdout


def test_admin_probe_fails_until_the_api_is_healthy(tmp):
    with FakeOts(healthy=False) as ots:
        r = admin(tmp, ots)
        assert r.returncode == 1 and ots.changes == 0, r.stdout


def test_admin_password_changed_in_the_ui_is_kept(tmp):
    with FakeOts(password="chosen-in-the-ui") as ots:
        r = admin(tmp, ots)
        assert r.returncode == 0 and ots.changes == 0 and ots.password == "chosen-in-the-ui", r.stdout


def test_admin_secret_ots_would_refuse_fails(tmp):
    with FakeOts() as ots:
        for bad in ("short", "has:colon-inside", "password"):
            r = admin(tmp, ots, bad)
            assert r.returncode != 0 and "not a password" in r.stderr, (r.returncode, r.stderr)
        assert ots.changes == 0


def backup(tmp, fail=False):
    bindir, dumps, pgpass = (os.path.join(tmp, d) for d in ("bin", "backups", "pgpass"))
    for d in (bindir, dumps, pgpass):
        os.makedirs(d, exist_ok=True)
    with open(os.path.join(bindir, "pg_dump"), "w") as f:
        f.write(FAKE_PG_DUMP)
    os.chmod(os.path.join(bindir, "pg_dump"), 0o755)
    pw = os.path.join(tmp, "postgres-password")
    with open(pw, "w") as f:
        f.write("pa:ss\n")
    env = dict(os.environ, PATH=bindir + os.pathsep + os.environ["PATH"], PGHOST="postgres",
               PGDATABASE="ots", PGUSER="ots", PGPASSWORD_FILE=pw, PGPASS_DIR=pgpass,
               BACKUP_DIR=dumps, BACKUP_KEEP_DAYS="14", **({"FAIL": "1"} if fail else {}))
    env.pop("PGPASSWORD", None)
    return subprocess.run(["sh", BACKUP], env=env, capture_output=True, text=True, timeout=30), dumps


def aged(path, days):
    with open(path, "w") as f:
        f.write("old")
    t = time.time() - days * 86400
    os.utime(path, (t, t))


def test_backup_dumps_and_keeps_the_retention(tmp):
    dumps = os.path.join(tmp, "backups")
    os.makedirs(dumps)
    aged(os.path.join(dumps, "ots-20200101T000000Z.dump"), 30)
    aged(os.path.join(dumps, "ots-20200102T000000Z.dump"), 3)
    aged(os.path.join(dumps, "ots-20200103T000000Z.dump.partial"), 1)
    r, dumps = backup(tmp)
    assert r.returncode == 0, r.stdout + r.stderr
    names = sorted(os.listdir(dumps))
    assert "ots-20200101T000000Z.dump" not in names, names  # past 14 days
    assert "ots-20200102T000000Z.dump" in names, names
    assert not any(n.endswith(".partial") for n in names), names
    new = [n for n in names if n not in ("ots-20200102T000000Z.dump",)]
    assert len(new) == 1 and new[0].startswith("ots-") and new[0].endswith("Z.dump"), names
    with open(os.path.join(dumps, new[0])) as f:
        assert f.read() == "PGDMP dump of ots\n"
    assert "pa:ss" not in r.stdout + r.stderr and "pa\\:ss" not in r.stdout + r.stderr


def test_backup_failure_keeps_old_dumps_and_fails(tmp):
    dumps = os.path.join(tmp, "backups")
    os.makedirs(dumps)
    aged(os.path.join(dumps, "ots-20200101T000000Z.dump"), 30)
    r, dumps = backup(tmp, fail=True)
    assert r.returncode != 0
    # Nothing is deleted when no new dump was made: the old one is all there is.
    assert os.listdir(dumps) == ["ots-20200101T000000Z.dump"], os.listdir(dumps)


def test_eud_handler_ssl_binds_the_pod_port_and_keeps_the_advertised_one(tmp):
    """The launcher, run by the real OTS package: eud_handler --ssl listens on --bind-port while
    config.yml (what OTS writes into packages and QR codes) keeps OTS_SSL_STREAMING_PORT."""
    if not os.path.exists(OTS_PYTHON):
        SKIPPED.append(f"no OTS package at {OTS_PYTHON}")
        return
    data = os.path.join(tmp, "ots")
    certs = os.path.join(data, "ca", "certs", "opentakserver")
    os.makedirs(certs)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-subj", "/CN=opentakserver", "-days", "1",
         "-keyout", os.path.join(certs, "opentakserver.nopass.key"),
         "-out", os.path.join(certs, "opentakserver.pem")],
        check=True, capture_output=True, timeout=30,
    )
    with open(os.path.join(certs, "opentakserver.pem")) as src, open(os.path.join(data, "ca", "ca.pem"), "w") as dst:
        dst.write(src.read())
    conf = {"OTS_SSL_STREAMING_PORT": 8089, "OTS_STREAMING_INTERFACE": "127.0.0.1",
            "OTS_DATA_FOLDER": data, "OTS_CA_FOLDER": os.path.join(data, "ca")}
    with open(os.path.join(data, "config.yml"), "w") as f:
        yaml.safe_dump(conf, f)
    with socket.socket() as s:  # a free port for the launcher to bind
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sys.path.insert(0, INIT)
    import listening  # noqa: PLC0415

    env = dict(os.environ, OTS_DATA_FOLDER=data, HOME=tmp)
    p = subprocess.Popen([OTS_PYTHON, EUD_SSL, f"--bind-port={port}", "--ssl"], env=env, cwd=tmp,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while not listening.listening(port) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert listening.listening(port), f"nothing listens on {port} (exit {p.poll()})"
    finally:
        p.terminate()
        try:
            out = p.communicate(timeout=20)[0]
        except subprocess.TimeoutExpired:
            p.kill()
            out = p.communicate(timeout=20)[0]
    assert f"eud_handler_ssl: binding {port}; clients are told 8089" in out, out[-2000:]
    with open(os.path.join(data, "config.yml")) as f:
        assert yaml.safe_load(f)["OTS_SSL_STREAMING_PORT"] == 8089


def test_eud_handler_ssl_refuses_bad_arguments(tmp):
    for args in ([], ["--ssl"], ["--bind-port=x", "--ssl"], ["--bind-port=18089"]):
        r = subprocess.run([sys.executable, EUD_SSL, *args], capture_output=True, text=True, timeout=30)
        assert r.returncode != 0 and "eud_handler_ssl:" in r.stderr, (args, r.stderr)


def main():
    tests = [(n, f) for n, f in sorted(globals().items()) if n.startswith("test_")]
    passed = failed = 0
    for name, fn in tests:
        with tempfile.TemporaryDirectory() as tmp:
            try:
                fn(tmp)
                passed += 1
                print(f"ok   {name}")
            except AssertionError as e:
                failed += 1
                print(f"FAIL {name}: {e}")
    for why in SKIPPED:
        print(f"skip: {why}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
