"""Fixtures for the takgate end-to-end suite.

takgate fixtures need $TAKGATE_BIN (tests/run sets it). Tests that use them are
marked `takgate` automatically, so `pytest -m "not takgate"` runs the rest
(fake_ots and nginx reference checks) without a binary.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import toml_str  # noqa: E402

TAKGATE_FIXTURES = {"takgate", "web_gate"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if TAKGATE_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.takgate)


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> harness.Pki:
    return harness.make_pki(tmp_path_factory.mktemp("pki"))


def _fake_ots(workdir: Path, *args: str):
    ots = harness.start_fake_ots(workdir, *args)
    yield ots
    code = ots.stop()
    assert code is not None, f"fake_ots did not stop on SIGTERM:\n{harness.tail(ots.log)}"


@pytest.fixture(scope="session")
def fake_ots(tmp_path_factory):
    """One OTS stand-in for the session (ping_timeout=1 as OTS, default interval)."""
    yield from _fake_ots(tmp_path_factory.mktemp("fake_ots"))


@pytest.fixture
def fake_ots_factory(tmp_path):
    """Start extra fake_ots instances with custom arguments (e.g. ping timing)."""
    started = []

    def start(*args: str) -> harness.FakeOts:
        ots = harness.start_fake_ots(tmp_path / f"fake_ots-{len(started)}", *args)
        started.append(ots)
        return ots

    yield start
    for ots in started:
        assert ots.stop() is not None, f"fake_ots did not stop:\n{harness.tail(ots.log)}"


@pytest.fixture(scope="session")
def ui_root(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ui")
    (d / "index.html").write_text("<!doctype html><title>takgate test UI</title><div id=root></div>\n")
    return d


@pytest.fixture
def takgate(tmp_path):
    """Factory: takgate(config_text) -> harness.Takgate (addresses from --bound-addrs).

    At teardown every instance gets SIGTERM and must exit 0 within 10 s."""
    started: list[harness.Takgate] = []

    def start(config_text: str, **kw) -> harness.Takgate:
        gate = harness.start_takgate(tmp_path / "takgate", config_text, **kw)
        started.append(gate)
        return gate

    yield start
    failures = []
    for gate in started:
        if gate.exit_code is None and gate.proc.poll() is not None:
            failures.append(f"takgate exited on its own during the test (code {gate.proc.returncode})")
        else:
            code = gate.stop(timeout=10)
            if code is None:
                failures.append("takgate did not exit within 10 s of SIGTERM")
            elif code != 0:
                failures.append(f"takgate exited with {code} after SIGTERM")
        if failures:
            failures.append(harness.tail(gate.log))
    assert not failures, "\n".join(failures)


web_config = harness.web_config  # shared with the e2e tier


def marti_listener(pki: harness.Pki, client_auth: str = "required", name: str = "marti", profile: str = "marti") -> str:
    return f"""
[[http]]
name = {toml_str(name)}
listen = "127.0.0.1:0"
profile = {toml_str(profile)}

[http.tls]
cert = {toml_str(pki.server_cert)}
key = {toml_str(pki.server_key)}
client_ca = {toml_str(pki.ca)}
client_auth = {toml_str(client_auth)}
"""


@pytest.fixture
def web_gate(takgate, fake_ots, ui_root) -> harness.Takgate:
    """takgate with just the plain `web` listener in front of the session fake_ots."""
    return takgate(web_config(fake_ots.url, ui_root))
