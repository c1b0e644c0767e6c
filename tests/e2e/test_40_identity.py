"""Who may connect to takgate's CoT listener (terminate mode, [stream.identity] refresh = 2s):
the same decision as OTS's own 8089 (the certificate's CN is an existing, active OTS user), plus
what OTS does not do (a user deactivated mid-session is cut off at the next refresh; a CRL signed
with OTS's CA key is honoured), and certificates from another CA refused.

"Accepted" is proven end to end: an SA sent through takgate reaches a plain TCP client on OTS's
own CoT port. "Refused" means the TLS handshake fails or the connection is closed before anything
is relayed, and takgate's metrics name the reason."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import otslib
from otslib import CotConn, metric, refused_on_stream, sa_event, settle_after_connect, unique

REFUSED = "takgate_stream_refused_total"
CLOSED = "takgate_stream_sessions_closed_total"


@pytest.fixture(scope="module")
def watcher(env):
    """A plain TCP client on OTS's CoT port, registered (its queues exist), that sees every CoT
    OTS routes to the __ANON__ group, which is where takgate's terminated sessions land."""
    b, _, _ = otslib.registered_conn(lambda: CotConn.tcp(env.ots_tcp, "watcher"), "WATCH")
    yield b
    b.close()


def session(env, cert, key, name) -> CotConn:
    conn = CotConn.tls(env.cot_addr, env.ca_pem, cert, key, name=name)
    settle_after_connect()  # OTS F3
    return conn


def assert_relayed(conn: CotConn, watcher: CotConn) -> None:
    uid, cs = unique("E2E-ID-"), unique("ID-")
    otslib.relay_until_seen(
        lambda: conn.send(sa_event(uid, cs)),
        lambda t: watcher.poll_frame(lambda f: uid.encode() in f, t),
        f"{conn.name}'s SA relayed to OTS ({uid})",
    )


def refused_count(env, reason):
    return metric(env, REFUSED, listener="cot-tls", reason=reason)


def test_active_user_is_accepted(env, admin, watcher, conns):
    _, cert, key = otslib.new_user_with_cert(admin, env, "e2eid")
    conn = session(env, cert, key, "active")
    conns.append(conn)
    assert_relayed(conn, watcher)
    assert not conn.closed


def test_no_client_certificate_is_refused(env):
    before = refused_count(env, "no_cert")
    how = refused_on_stream(env, None, None)
    assert how
    otslib.harness.wait_until(lambda: refused_count(env, "no_cert") > before, otslib.T, "refused{reason=no_cert}")


def wait_identity_refreshed(env) -> None:
    """Wait until takgate has reloaded OTS's user set twice more (so at least one whole reload
    started after the caller's change). Polls takgate's refresh counter; deadline 3 x refresh."""
    refresh = float(env.state["identity_refresh_s"])
    start = metric(env, "takgate_identity_refreshes_total", listener="cot-tls")
    otslib.harness.wait_until(
        lambda: metric(env, "takgate_identity_refreshes_total", listener="cot-tls") >= start + 2,
        3 * refresh + otslib.T,
        "two identity refreshes",
    )


def test_deactivated_user_is_refused_and_reactivated_user_accepted(env, admin, watcher, conns):
    username, cert, key = otslib.new_user_with_cert(admin, env, "e2eid")
    # Known to takgate as active first (an accepted session), as a real device would be.
    conn = session(env, cert, key, "before-deactivation")
    assert_relayed(conn, watcher)
    conn.close()

    admin.deactivate(username)
    # takgate decides from its cached active set, reloaded every `refresh`; once reloaded, the
    # certificate of a deactivated user is refused at connect, as OTS's own 8089 refuses it.
    wait_identity_refreshed(env)
    before = refused_count(env, "inactive_user")
    how = refused_on_stream(env, cert, key)
    assert how
    otslib.harness.wait_until(
        lambda: refused_count(env, "inactive_user") > before, otslib.T, "refused{reason=inactive_user}"
    )
    # Identity parity the other way: active again -> accepted once takgate has reloaded the set.
    # (A CN missing from the set triggers a reload, but at most one a second: the refusal just
    # above used it up, so wait for the periodic refresh instead.)
    admin.activate(username)
    wait_identity_refreshed(env)
    conn = session(env, cert, key, "reactivated")
    conns.append(conn)
    assert_relayed(conn, watcher)


def test_user_deactivated_mid_session_is_cut_off_within_refresh(env, admin, watcher, conns):
    refresh = float(env.state["identity_refresh_s"])
    username, cert, key = otslib.new_user_with_cert(admin, env, "e2eid")
    conn = session(env, cert, key, "live")
    conns.append(conn)
    assert_relayed(conn, watcher)
    before = metric(env, CLOSED, listener="cot-tls", reason="user_inactive")

    admin.deactivate(username)
    t0 = time.monotonic()
    # Closed at takgate's next refresh of the active set: at most `refresh` after the change,
    # plus the refresh request itself. (OTS itself never disconnects a live session.)
    elapsed = conn.wait_closed(timeout=refresh + 3)
    total = time.monotonic() - t0
    print(f"live session closed {total:.2f}s after deactivation (refresh {refresh}s)")
    assert total <= refresh + 1.0, f"closed after {total:.2f}s, refresh is {refresh}s"
    assert elapsed <= total
    otslib.harness.wait_until(
        lambda: metric(env, CLOSED, listener="cot-tls", reason="user_inactive") > before,
        otslib.T,
        "sessions_closed{reason=user_inactive}",
    )


@pytest.mark.parametrize(
    "ca_name,reason",
    [("Some-Other-CA", "unknown_ca"), ("OpenTAKServer-CA", "bad_cert")],
    ids=["other-ca", "other-ca-same-name-as-ots-ca"],
)
def test_certificate_from_another_ca_is_refused(env, admin, tmp_path, ca_name, reason):
    # The CN is an existing, active OTS user: only the issuing CA is wrong. With the same CA
    # name as OTS's, the chain is built to OTS's CA and its signature does not verify.
    username, _, _ = otslib.new_user_with_cert(admin, env, "e2eid")
    cert, key = otslib.foreign_cert(tmp_path, username, ca_name)
    before = refused_count(env, reason)
    how = refused_on_stream(env, cert, key)
    assert how.startswith("handshake") or "alert" in how.lower() or "certificate" in how.lower(), how
    otslib.harness.wait_until(lambda: refused_count(env, reason) > before, otslib.T, f"refused{{reason={reason}}}")


def test_revoked_certificate_is_refused(env, admin, watcher, conns):
    _, cert, key = otslib.new_user_with_cert(admin, env, "e2eid")
    _, other_cert, other_key = otslib.new_user_with_cert(admin, env, "e2eid")
    # Control: accepted before revocation.
    conn = session(env, cert, key, "to-be-revoked")
    assert_relayed(conn, watcher)
    conn.close()

    before = refused_count(env, "revoked")
    otslib.revoke(env, cert)  # new ca.crl signed with OTS's CA key; takgate stats it every 2 s

    outcome = {}

    def refused_now():
        try:
            outcome["how"] = refused_on_stream(env, cert, key, timeout=1.0)
            return True
        except AssertionError:  # still open after 1 s: not reloaded yet
            return False

    t0 = time.monotonic()
    otslib.harness.wait_until(refused_now, 10, "takgate to pick up the new CRL and refuse the revoked certificate")
    print(f"revoked certificate refused {time.monotonic() - t0:.2f}s after the CRL was written: {outcome['how']}")
    otslib.harness.wait_until(lambda: refused_count(env, "revoked") > before, otslib.T, "refused{reason=revoked}")

    # A certificate that is not on the CRL still works.
    ok = session(env, other_cert, other_key, "not-revoked")
    conns.append(ok)
    assert_relayed(ok, watcher)


def test_takgate_loads_ots_stock_crl(env, tmp_path):
    """takgate's config with the CoT listener's crl pointing at OTS's own, untouched ca/ca.crl:
    a version 1 CRL (`openssl ca -gencrl` without crlnumber), which webpki cannot parse."""
    import subprocess

    stock = env.ca / "ca.crl"
    assert b"BEGIN X509 CRL" in stock.read_bytes()
    config = Path(env.state["takgate_config"]).read_text()
    assert f'crl = "{env.crl}"' in config
    cfg = tmp_path / "takgate-stock-crl.toml"
    cfg.write_text(config.replace(f'crl = "{env.crl}"', f'crl = "{stock}"'))
    res = subprocess.run(
        [env.state["takgate_bin"], "check", "--config", str(cfg)], capture_output=True, text=True, timeout=30
    )
    assert res.returncode == 0, res.stdout + res.stderr
