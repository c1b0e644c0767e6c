"""deploy/'s first-start guard against OTS's default administrator password
(deploy/base/ots-init/admin_password.py, the opentakserver container's startupProbe), run against
the real OTS: while `administrator`/`password` logs in, the probe sets the password from the
Secret's file and succeeds only once the default is refused; run again, it changes nothing.

Last in the tier (test_99): OTS rotates the administrator's tokens when the password changes, so
the administrator token the earlier tests and takgate's `token_file` use stops working. The
default password is put back at the end, so a rerun against the same OTS starts as the first did.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import requests

PROBE = Path(__file__).resolve().parents[2] / "deploy" / "base" / "ots-init" / "admin_password.py"
T = 10


def login(api: str, password: str) -> requests.Response:
    return requests.post(
        f"{api}/api/login", json={"username": "administrator", "password": password}, timeout=T
    )


def probe(api: str, password_file: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(PROBE), str(password_file), api],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_probe_replaces_the_default_administrator_password_with_the_secrets(env, tmp_path):
    api = env.ots_api
    new = secrets.token_hex(16)
    password_file = tmp_path / "admin-password"
    password_file.write_text(new + "\n")
    password_file.chmod(0o600)

    assert login(api, "password").status_code == 200, "control: OTS starts with its default password"
    assert login(api, new).status_code != 200, "control: the Secret's password is not set yet"

    first = probe(api, password_file)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "default password of administrator found; change -> 200" in first.stdout, first.stdout
    assert new not in first.stdout + first.stderr, "the password never reaches the probe's output"
    try:
        assert login(api, "password").status_code != 200, "the default password no longer works"
        assert login(api, new).status_code == 200, "the Secret's password does"

        again = probe(api, password_file)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "found" not in again.stdout, f"nothing left to change: {again.stdout}"
    finally:
        # Put the default back for a rerun against this OTS.
        s = requests.Session()
        r = s.post(f"{api}/api/login", json={"username": "administrator", "password": new}, timeout=T)
        if r.status_code == 200:
            token = r.json()["response"]["csrf_token"]
            s.post(
                f"{api}/api/user/password/reset",
                json={"username": "administrator", "new_password": "password"},
                headers={"X-XSRF-Token": token},
                timeout=T,
            )
