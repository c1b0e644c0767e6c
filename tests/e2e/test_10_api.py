"""OTS's REST API through takgate's web listener: the login the OTS UI does (cookies, CSRF token,
X-XSRF-Token header), an authenticated call, a state-changing call, logout."""

from __future__ import annotations

import otslib


def test_ui_is_served_by_takgate(env):
    r = otslib.requests.get(env.web + "/", timeout=otslib.T)
    assert r.status_code == 200
    assert "OpenTAK Server through takgate" in r.text
    # SPA fallback: an unknown path gets index.html too (nginx try_files $uri /index.html).
    r = otslib.requests.get(env.web + "/map/some/route", timeout=otslib.T)
    assert r.status_code == 200 and "OpenTAK Server through takgate" in r.text
    r = otslib.requests.get(env.web + "/vendor/socket.io.min.js", timeout=otslib.T)
    assert r.status_code == 200 and len(r.content) > 10_000


def test_health_through_takgate(env):
    r = otslib.requests.get(env.web + "/api/health", timeout=otslib.T)
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "healthy"}


def test_login_rest_call_logout(env):
    web = otslib.OtsWeb(env.web)
    try:
        # Not logged in: OTS refuses (JSON 401 because we ask for JSON).
        r = web.get("/api/me")
        assert r.status_code == 401, (r.status_code, r.text[:300])

        # 1. GET /api/login gives the CSRF token, as in OTS's UI.
        r = web.get("/api/login")
        assert r.status_code == 200, r.text[:300]
        csrf = r.json()["response"]["csrf_token"]
        assert csrf

        # 2. POST /api/login: OTS sets the session cookie (HttpOnly, SameSite=Strict) and XSRF-TOKEN.
        r = web.http.post(
            env.web + "/api/login?include_auth_token",
            json={"username": "administrator", "password": "password", "submit": "Login", "csrf_token": csrf},
            headers={"X-XSRF-Token": csrf},
            timeout=otslib.T,
        )
        assert r.status_code == 200, r.text[:300]
        body = r.json()
        assert body["meta"]["code"] == 200
        assert body["response"]["user"]["authentication_token"]
        set_cookie = r.headers.get("Set-Cookie", "")
        assert "session=" in set_cookie and "HttpOnly" in set_cookie, set_cookie
        assert "SameSite=Strict" in set_cookie, set_cookie
        # takgate must not rewrite cookie attributes (no Domain added, no Path changed).
        assert "Domain=" not in set_cookie, set_cookie
        assert web.http.cookies.get("session")
        web.csrf = web.http.cookies.get("XSRF-TOKEN") or body["response"].get("csrf_token") or csrf

        # 3. An authenticated REST call.
        r = web.get("/api/me")
        assert r.status_code == 200, r.text[:300]
        assert r.json()["username"] == "administrator"
        r = web.get("/api/status")
        assert r.status_code == 200, r.text[:300]

        # 4. State-changing calls. An @auth_required view checks the CSRF token: without
        #    X-XSRF-Token the cookie alone is refused, with it the view runs (and validates).
        r = web.http.post(env.web + "/api/markers", json={}, timeout=otslib.T)
        assert r.status_code == 400 and "CSRF token is missing" in r.text, (r.status_code, r.text[:300])
        r = web.post("/api/markers", {})
        assert r.status_code == 400 and "latitude" in r.text, (r.status_code, r.text[:300])
        name = otslib.unique("e2eapi")
        payload = {
            "username": name,
            "password": "E2e-Passw0rd!",
            "confirm_password": "E2e-Passw0rd!",
            "roles": ["user"],
        }
        r = web.post("/api/user/add", payload)
        assert r.status_code == 200 and r.json().get("success") is True, r.text[:300]
        r = web.get("/api/users/all")
        assert r.status_code == 200
        assert name in [u["username"] for u in r.json()]

        # 5. Logout ends the session: the same cookie jar is refused afterwards.
        r = web.post("/api/logout", None)
        assert r.status_code == 200, (r.status_code, r.text[:300])
        r = web.get("/api/me")
        assert r.status_code == 401, (r.status_code, r.text[:300])
    finally:
        web.close()


def test_wrong_password_is_refused(env):
    web = otslib.OtsWeb(env.web)
    try:
        r = web.get("/api/login")
        csrf = r.json()["response"]["csrf_token"]
        r = web.post("/api/login", {"username": "administrator", "password": "not-the-password", "csrf_token": csrf})
        assert r.status_code == 400, (r.status_code, r.text[:300])
        assert web.get("/api/me").status_code == 401
    finally:
        web.close()
