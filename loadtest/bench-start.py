#!/usr/bin/env python3
"""Cold starts of a server, for loadtest/bench: the time from exec to the first 200 from its
readiness URL, and its RSS once it has sat idle for a while after that.

    bench-start.py --ready URL --out FILE.json [--trials N] [--idle S] -- COMMAND...

Each trial execs COMMAND (time counted from just before the fork), polls URL every millisecond
over a raw socket (no client start-up cost in the figure), reads VmRSS of the process at ready
and again after --idle seconds without traffic, then stops it with SIGTERM (SIGKILL after 10 s).
Writes every trial and the medians to FILE.json and prints the medians. Exits non-zero, with
the server's output, if it exits or is not ready within 30 s.
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from urllib.parse import urlsplit

POLL_S = 0.001
READY_WITHIN_S = 30.0


def status_of(host, port, path):
    """The HTTP status of GET path, or None when nothing answers yet."""
    try:
        with socket.create_connection((host, port), timeout=1.0) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            head = s.recv(64)
    except OSError:
        return None
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return None


def trial(cmd, url, idle_s, log):
    u = urlsplit(url)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        while status_of(u.hostname, u.port, u.path or "/") != 200:
            if proc.poll() is not None:
                raise RuntimeError(f"exited with status {proc.returncode} before it was ready")
            if time.monotonic() - t0 > READY_WITHIN_S:
                raise RuntimeError(f"not ready within {READY_WITHIN_S:.0f} s")
            time.sleep(POLL_S)
        ready_ms = (time.monotonic() - t0) * 1000
        at_ready = rss_kb(proc.pid)
        time.sleep(idle_s)
        idle = rss_kb(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return {"start_to_ready_ms": round(ready_ms, 2), "rss_at_ready_kb": at_ready, "idle_rss_kb": idle}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ready", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--log", default=os.devnull)
    p.add_argument("--trials", type=int, default=5)
    p.add_argument("--idle", type=float, default=1.0)
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    a = p.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    trials = []
    with open(a.log, "ab") as log:
        for _ in range(a.trials):
            try:
                trials.append(trial(cmd, a.ready, a.idle, log))
            except RuntimeError as e:
                sys.exit(f"bench-start: {' '.join(cmd)}: {e} (output in {a.log})")
    med = {k: statistics.median(t[k] for t in trials) for k in trials[0]}
    result = {**med, "trials": trials, "idle_s": a.idle, "poll_ms": POLL_S * 1000}
    with open(a.out, "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps(med))


if __name__ == "__main__":
    main()
