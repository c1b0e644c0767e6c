"""startupProbe of the opentakserver container: OTS's default administrator password never works.

On its first start OTS creates the account `administrator` with the password `password` (when
no user has the administrator role). This probe, run in the OTS image against the API on the
pod's loopback, succeeds only once that password no longer opens the account:

1. the API must answer /api/health (else: not started yet, exit 1);
2. if `administrator`/`password` logs in, that session sets the password, through OTS's own
   administrator endpoint /api/user/password/reset (OTS commits it and sends no e-mail, unlike
   Flask-Security's /api/password/change, which would try to mail a change notice through an
   SMTP server this pod does not have), to the one in Secret ots-secrets (key admin-password,
   mounted as a file: the password is never on a command line or in a log);
3. exit 0 only if `administrator`/`password` is then refused.

Until it succeeds the container is not started, so the pod is never Ready (takgate gets no
Service traffic) while the default password works. An administrator password changed later in
the UI is left alone: the Secret only replaces the default.

Usage: admin_password.py PASSWORD_FILE [API_URL]   (API_URL default http://127.0.0.1:8081)
"""

import http.cookiejar
import json
import sys
import urllib.error
import urllib.request

USER = "administrator"
DEFAULT = "password"
TIMEOUT = 3


def call(opener, url, body=None, headers=None):
    """(status, parsed JSON or None)."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with opener.open(req, timeout=TIMEOUT) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw or b"null")
    except ValueError:
        return status, None


def session():
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))


def login(api, password):
    """An opener holding the session and its CSRF token, or None if the login is refused."""
    opener = session()
    status, body = call(opener, api + "/api/login", {"username": USER, "password": password})
    if status != 200:
        return None
    token = ((body or {}).get("response") or {}).get("csrf_token", "")
    return opener, token


def main(argv):
    if len(argv) not in (2, 3):
        sys.exit("usage: admin_password.py PASSWORD_FILE [API_URL]")
    api = (argv[2] if len(argv) == 3 else "http://127.0.0.1:8081").rstrip("/")
    with open(argv[1], encoding="utf-8") as f:
        new = f.read().strip()
    if len(new) < 8 or "@" in new or ":" in new or new == DEFAULT:
        # OTS's own rules: 8 characters at least, no @ or : (deploy/secrets makes hex).
        sys.exit("admin_password: the admin-password secret is not a password OTS accepts")
    try:
        status, _ = call(session(), api + "/api/health")
        if status != 200:
            print(f"admin_password: OTS API not healthy yet ({status})")
            return 1
        default = login(api, DEFAULT)
        if default is not None:
            opener, token = default
            status, body = call(
                opener, api + "/api/user/password/reset",
                {"username": USER, "new_password": new},
                {"X-XSRF-Token": token},
            )
            # Status only: the answer could echo form fields.
            print(f"admin_password: default password of {USER} found; change -> {status}")
        if login(api, DEFAULT) is not None:
            print(f"admin_password: {USER}/{DEFAULT} still logs in")
            return 1
    except (OSError, ValueError) as e:
        print(f"admin_password: {type(e).__name__}: {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
