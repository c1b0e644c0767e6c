"""The CLI contract the harness relies on: --bound-addrs JSON, `check`,
SIGTERM -> exit 0 (asserted by the takgate fixture's teardown)."""

from __future__ import annotations

import json
import subprocess

import pytest
import requests

import harness
from conftest import marti_listener, web_config

T = 5


def test_bound_addrs_json(takgate, fake_ots, ui_root, pki):
    gate = takgate(web_config(fake_ots.url, ui_root) + marti_listener(pki, "optional"))
    data = json.loads(gate.bound.read_text())
    assert set(data["http"]) == {"web", "marti"}
    addrs = list(data["http"].values()) + [data["admin"]]
    assert len(set(addrs)) == len(addrs)
    for addr in addrs:
        host, port = harness.hostport(addr)
        assert host == "127.0.0.1" and 0 < port < 65536
        assert harness.can_connect(host, port)
    r = requests.get(f"{gate.url('web')}/api/health", timeout=T)
    assert r.status_code == 200 and r.json() == {"status": "healthy"}


@pytest.mark.takgate
def test_check_accepts_valid_and_rejects_invalid(tmp_path, fake_ots, ui_root):
    binary = str(harness.takgate_bin())
    good = tmp_path / "good.toml"
    good.write_text(web_config(fake_ots.url, ui_root))
    res = subprocess.run([binary, "check", "--config", str(good)], capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr.decode(errors="replace")

    for name, text in {
        "syntax": "this is [not toml",
        "profile": web_config(fake_ots.url, ui_root).replace('profile = "web"', 'profile = "nope"'),
        "upstream": web_config("not a url", ui_root),
    }.items():
        bad = tmp_path / f"bad-{name}.toml"
        bad.write_text(text)
        res = subprocess.run([binary, "check", "--config", str(bad)], capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
        assert res.returncode != 0, f"check accepted a bad config ({name})"
        assert res.stderr.strip(), f"no message on stderr for bad config ({name})"


@pytest.mark.takgate
def test_help_version_and_builtin_defaults():
    binary = str(harness.takgate_bin())
    res = subprocess.run([binary, "--version"], capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert res.returncode == 0
    assert res.stdout.decode().startswith("takgate ")
    res = subprocess.run([binary, "--help"], capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert res.returncode == 0
    assert "check" in res.stdout.decode() and "--config" in res.stdout.decode()
    # No config file: the built-in defaults match the OTS pod.
    res = subprocess.run([binary, "check"], capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stderr.decode(errors="replace")
    out = res.stdout.decode()
    assert "(built-in defaults)" in out
    assert "upstream  http://127.0.0.1:8081/" in out
    assert "admin     http://0.0.0.0:9100" in out
    assert "listener  web 0.0.0.0:8080 profile=web plain" in out
    assert "/var/www/html/opentakserver" in out


@pytest.mark.takgate
def test_check_names_the_bad_key(tmp_path, fake_ots, ui_root):
    binary = str(harness.takgate_bin())
    bad = tmp_path / "bad.toml"
    bad.write_text(web_config(fake_ots.url, ui_root).replace('profile = "web"', 'profile = "web"\nmax_bodyy = "1MiB"'))
    res = subprocess.run([binary, "check", "--config", str(bad)], capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    assert res.returncode != 0
    assert "max_bodyy" in res.stderr.decode()
