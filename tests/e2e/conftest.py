"""Fixtures for the end-to-end tier against the real OpenTAK Server behind takgate.

The session fixture `env` uses an environment that is already up when OTS_E2E_STATE names its
state.json (tests/run runs tests/e2e/ots-up first and ots-down after, via a trap); otherwise it
runs tests/e2e/ots-up itself (with $TAKGATE_BIN) and tests/e2e/ots-down at the end.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

E2E = Path(__file__).resolve().parent
sys.path.insert(0, str(E2E.parent / "python"))  # harness.py: wait_until, hostport, tail
sys.path.insert(0, str(E2E))

import harness  # noqa: E402
import otslib  # noqa: E402

ARTIFACTS = E2E.parent / "artifacts"


@pytest.fixture(scope="session")
def env():
    state = os.environ.get("OTS_E2E_STATE")
    if state:
        e = otslib.Env.load(Path(state))
        yield e
        return
    harness.takgate_bin()  # fails clearly when TAKGATE_BIN is not set
    run = Path(os.environ.get("OTS_E2E_RUN", ARTIFACTS / "ots-run"))
    proc_env = dict(os.environ, OTS_E2E_RUN=str(run))
    up = subprocess.run([str(E2E / "ots-up")], env=proc_env, timeout=900)
    try:
        assert up.returncode == 0, f"tests/e2e/ots-up failed ({up.returncode}); logs in {run}/logs"
        yield otslib.Env.load(run / "state.json")
    finally:
        subprocess.run([str(E2E / "ots-down")], env=proc_env, timeout=120)


@pytest.fixture(scope="session")
def admin(env) -> otslib.OtsWeb:
    """OTS's administrator, logged in through takgate's web listener."""
    web = otslib.OtsWeb(env.web)
    web.login(env.state["admin"]["username"], env.state["admin"]["password"])
    yield web
    web.close()


@pytest.fixture
def sio_admin(env):
    """Factory: a logged-in (administrator) Socket.IO client on the given transports."""
    made = []

    def make(transports=("polling", "websocket")) -> otslib.SioClient:
        web = otslib.OtsWeb(env.web)
        web.login(env.state["admin"]["username"], env.state["admin"]["password"])
        client = otslib.SioClient(web, env.web_origin, list(transports)).connect()
        made.append(client)
        return client

    yield make
    for c in made:
        c.close()
        c.web.close()


@pytest.fixture
def conns():
    """Collects CotConn objects and closes them after the test."""
    opened: list[otslib.CotConn] = []
    yield opened
    for c in opened:
        c.close()


@pytest.fixture(scope="session")
def browser_ready():
    """Debian's Chromium, node and the drivers' node_modules (playwright-core), all from ots-up."""
    if not Path(otslib.CHROMIUM).exists():
        pytest.fail(f"{otslib.CHROMIUM} missing: tests/e2e/ots-up installs Debian's chromium")
    if not (otslib.BROWSER / "node_modules" / "playwright-core").is_dir():
        pytest.fail("tests/e2e/browser/node_modules missing: tests/e2e/ots-up runs npm ci there")
    assert shutil.which("node"), "node not found"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


def pytest_runtest_makereport(item, call):
    """On failure, attach the tails of takgate's and OTS's logs."""
    if call.when == "call" and call.excinfo is not None and "env" in item.fixturenames:
        try:
            e = item.funcargs["env"]
        except KeyError:
            return
        logs = e.run / "logs"
        for name in ("takgate", "opentakserver", "eud_handler", "eud_handler_ssl", "cot_parser"):
            item.add_report_section("call", f"{name}.log (tail)", harness.tail(logs / f"{name}.log", 3000))
