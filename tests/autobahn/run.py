#!/usr/bin/env python3
"""Autobahn|Testsuite through takgate, compared with a direct run.

1. Start Autobahn's own echo testee (externalPort = None) on 127.0.0.1:0.
2. `wstest -m fuzzingclient` against it directly.
3. Start takgate with a custom route /echo -> testee (strip_prefix) and run
   the same cases against ws://127.0.0.1:<takgate>/echo.
4. For every case compare behavior, behaviorClose and remoteCloseCode; a
   transparent proxy changes none of them. Exit 1 listing the differences.

Groups 9 (performance), 12 and 13 (compression, ~50 s per 18 cases) are
excluded as in shared/reference/autobahn.md. Reports go to
tests/artifacts/autobahn/{direct,takgate}/ (gitignored).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO / "tests" / "python"))

import harness  # noqa: E402

EXCLUDE = ["9.*", "12.*", "13.*"]
FIELDS = ("behavior", "behaviorClose", "remoteCloseCode")
WSTEST_TIMEOUT = 900


def start_testee(venv: Path, workdir: Path):
    workdir.mkdir(parents=True, exist_ok=True)
    port_file = workdir / "testee.port"
    log = workdir / "testee.log"
    port_file.unlink(missing_ok=True)
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [str(venv / "bin" / "python"), str(HERE / "testee.py"), str(port_file)],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
        )

    def alive():
        if proc.poll() is not None:
            raise harness.HarnessError(f"testee exited with {proc.returncode}:\n{harness.tail(log)}")

    try:
        port = int(harness.wait_until(lambda: port_file.exists() and port_file.read_text().strip(), 30, "testee port file", alive))
    except BaseException:
        harness.stop_process(proc, timeout=5)
        raise
    return proc, port


def run_wstest(venv: Path, outdir: Path, agent: str, url: str, cases: list) -> dict:
    if outdir.exists():
        shutil.rmtree(outdir)
    outdir.mkdir(parents=True)
    spec = {
        "outdir": str(outdir),
        "servers": [{"agent": agent, "url": url}],
        "cases": cases,
        "exclude-cases": EXCLUDE,
        "exclude-agent-cases": {},
    }
    spec_path = outdir / "fuzzingclient.json"
    spec_path.write_text(json.dumps(spec, indent=2))
    log = outdir / "wstest.log"
    t0 = time.monotonic()
    with open(log, "wb") as logf:
        res = subprocess.run(
            [str(venv / "bin" / "wstest"), "-m", "fuzzingclient", "-s", str(spec_path)],
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            cwd=str(outdir),
            timeout=WSTEST_TIMEOUT,
        )
    elapsed = time.monotonic() - t0
    index = outdir / "index.json"
    if res.returncode != 0 or not index.exists():
        raise harness.HarnessError(f"wstest ({agent}) exited {res.returncode}; no index.json?\n{harness.tail(log)}")
    report = json.loads(index.read_text())[agent]
    counts = collections.Counter(c["behavior"] for c in report.values())
    print(f"  {agent}: {len(report)} cases in {elapsed:.1f}s: " + ", ".join(f"{n} {b}" for b, n in sorted(counts.items())))
    return report


def case_key(case_id: str):
    return tuple(int(p) if p.isdigit() else p for p in case_id.split("."))


def compare(direct: dict, proxied: dict) -> list:
    diffs = []
    for case in sorted(set(direct) | set(proxied), key=case_key):
        a, b = direct.get(case), proxied.get(case)
        if a is None or b is None:
            diffs.append(f"{case}: only in {'direct' if b is None else 'takgate'} run")
            continue
        changed = [f"{f}: {a.get(f)!r} -> {b.get(f)!r}" for f in FIELDS if a.get(f) != b.get(f)]
        if changed:
            diffs.append(f"{case}: " + "; ".join(changed))
    return diffs


def takgate_config(testee_port: int, ui_root: Path) -> str:
    upstream = f"http://127.0.0.1:{testee_port}"
    route = f"""
[[http.route]]
prefix = "/echo"
upstream = {harness.toml_str(upstream)}
strip_prefix = true
"""
    return harness.web_config(upstream, ui_root, route)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--venv", type=Path, default=REPO / ".venv-autobahn", help="Python 2.7 venv with autobahntestsuite")
    ap.add_argument("--artifacts", type=Path, default=REPO / "tests" / "artifacts" / "autobahn")
    ap.add_argument("--direct-only", action="store_true", help="only the direct run (no takgate needed)")
    ap.add_argument("--cases", nargs="*", default=["*"], help='case patterns (default "*")')
    args = ap.parse_args()

    artifacts = args.artifacts.resolve()
    artifacts.mkdir(parents=True, exist_ok=True)
    print(f"Autobahn fuzzingclient, cases {args.cases} excluding {EXCLUDE}; reports in {artifacts}")

    testee, port = start_testee(args.venv, artifacts / "testee")
    gate = None
    try:
        print(f"  testee on 127.0.0.1:{port}")
        direct = run_wstest(args.venv, artifacts / "direct", "direct", f"ws://127.0.0.1:{port}", args.cases)
        if not direct:
            print("FAIL: the direct run has no cases")
            return 1
        failed = sorted((c for c, r in direct.items() if r["behavior"] == "FAILED"), key=case_key)
        if failed:
            print(f"FAIL: the reference testee itself failed cases {failed}: broken Autobahn install?")
            return 1
        if args.direct_only:
            return 0

        ui = artifacts / "ui"
        ui.mkdir(exist_ok=True)
        (ui / "index.html").write_text("autobahn\n")
        gate = harness.start_takgate(artifacts / "takgate-proc", takgate_config(port, ui))
        print(f"  takgate web listener on {gate.addr('web')} (/echo -> testee)")
        proxied = run_wstest(args.venv, artifacts / "takgate", "takgate", f"ws://{gate.addr('web')}/echo", args.cases)

        code = gate.stop(timeout=10)
        if code != 0:
            print(f"FAIL: takgate exit code after SIGTERM: {code}\n{harness.tail(gate.log)}")
            return 1

        diffs = compare(direct, proxied)
        same = len(set(direct) & set(proxied)) - sum(1 for d in diffs if "only in" not in d)
        print(f"  compared {len(direct)} cases: {same} identical, {len(diffs)} differ")
        for d in diffs:
            print(f"    DIFF {d}")
        print(f"autobahn: {same} passed, {len(diffs)} failed")
        if diffs:
            print(f"FAIL: takgate changed the outcome of {len(diffs)} Autobahn cases (reports: {artifacts})")
            return 1
        print("OK: takgate is transparent to every compared Autobahn case")
        return 0
    finally:
        if gate is not None:
            gate.stop(timeout=10)
        harness.stop_process(testee, timeout=10)


if __name__ == "__main__":
    sys.exit(main())
