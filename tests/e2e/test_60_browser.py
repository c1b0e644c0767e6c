"""A real browser: Debian's headless Chromium, driven by playwright-core (tests/e2e/browser/run.mjs),
opens the test UI that takgate serves (tests/e2e/browser/ui/index.html), logs in the way OTS's own
web UI does (GET /api/login for the CSRF token, POST /api/login, io('/socket.io') from
socket.io-client), and shows the `point`/`eud` events it receives. A CoT sent by a pytak client
through takgate's CoT listener must appear on the page within 2 s. The screenshot is kept in
tests/artifacts/."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

import otslib
from otslib import sa_event



def test_cot_from_pytak_appears_in_browser_within_2s(env, admin, browser_ready, artifacts):
    _, cert, key = otslib.new_user_with_cert(admin, env, "e2ebrowser")
    shot = artifacts / "e2e-browser.png"
    shot.unlink(missing_ok=True)
    drv = otslib.JsonLines(
        [
            "node",
            str(otslib.BROWSER / "run.mjs"),
            "--url",
            env.web + "/",
            "--user",
            env.state["admin"]["username"],
            "--password",
            env.state["admin"]["password"],
            "--screenshot",
            str(shot),
            "--chromium",
            otslib.CHROMIUM,
            "--timeout",
            "20000",
        ],
        cwd=otslib.BROWSER,
    )
    try:
        ready = drv.next(60)
        assert ready["event"] == "ready", ready
        assert ready["status"].startswith("connected"), ready
        assert "administrator" in ready["me"], ready

        async def scenario():
            # Registered first (F3), so the measured SA is routed at once, not cached by OTS.
            c, uid, callsign = await otslib.registered_pytak(env, cert, key, "WEB")
            try:
                lat = "48.8584"
                seen = asyncio.ensure_future(asyncio.to_thread(drv.next, 25))
                drv.send({"expect": callsign, "lat": lat})  # the browser starts its clock on this line
                # Repeated every RESEND s until the page has it, as ATAK repeats its SA (and as OTS
                # needs: a publish can wait in pika's buffer for the next one, see otslib).
                while not seen.done():
                    await c.send(sa_event(uid, callsign, float(lat), 2.2945))
                    await asyncio.wait({seen}, timeout=otslib.RESEND)
                return uid, callsign, seen.result()
            finally:
                await c.close()

        uid, callsign, seen = asyncio.run(asyncio.wait_for(scenario(), 90))
        assert seen["event"] == "seen", seen
        print(f"CoT on the page {seen['ms']:.0f} ms after the send ({seen['kind']} event): {seen['row']!r}")
        assert seen["ms"] < 2000, f"CoT appeared after {seen['ms']:.0f} ms"
        assert seen["uid"] == uid or callsign in seen["row"], seen
        done = drv.next(30)
        assert done["event"] == "done", done
        assert shot.exists() and shot.stat().st_size > 5000
    finally:
        drv.close()
