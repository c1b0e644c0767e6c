"""Tests of deploy/pin-images against stand-ins for crane (no registry is reachable here).

Usage: pin_images_test.py KUBECTL
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
DEPLOY = os.path.dirname(HERE)
PIN = os.path.join(DEPLOY, "pin-images")

# A crane that answers `crane digest REF` with a digest made from REF, or fails for one REF.
FAKE_CRANE = """#!/bin/sh
[ "$1" = digest ] || exit 2
[ "$2" = "${FAIL_REF:-}" ] && { echo "MANIFEST_UNKNOWN: $2" >&2; exit 1; }
printf 'sha256:%s\\n' "$(printf %s "$2" | sha256sum | cut -d' ' -f1)"
"""


def digest(ref):
    return "sha256:" + hashlib.sha256(ref.encode()).hexdigest()


def rendered_images(kubectl, base):
    out = subprocess.run([kubectl, "kustomize", base], capture_output=True, text=True, check=True, timeout=60).stdout
    return sorted({line.split("image:", 1)[1].strip() for line in out.splitlines() if line.strip().startswith(("image:", "- image:"))})


def main():
    kubectl = sys.argv[1]
    passed = failed = 0

    def check(name, cond, detail=""):
        nonlocal passed, failed
        print(f"{'ok  ' if cond else 'FAIL'} {name}{': ' + detail if detail and not cond else ''}")
        passed, failed = passed + bool(cond), failed + (not cond)

    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base")
        shutil.copytree(os.path.join(DEPLOY, "base"), base)
        kust = os.path.join(base, "kustomization.yaml")
        bindir = os.path.join(tmp, "bin")
        os.makedirs(bindir)
        with open(os.path.join(bindir, "crane"), "w") as f:
            f.write(FAKE_CRANE)
        os.chmod(os.path.join(bindir, "crane"), 0o755)
        env = dict(os.environ, PATH=bindir + os.pathsep + os.environ["PATH"])

        before = rendered_images(kubectl, base)
        r = subprocess.run([PIN, "--kustomization", kust, "--list"], capture_output=True, text=True, env=env, timeout=60)
        check("--list says unpinned and exits 1 before pinning", r.returncode == 1 and "unpinned" in r.stdout, r.stdout)

        with open(kust) as f:
            original = f.read()
        bad_ref = before[0]
        r = subprocess.run([PIN, "--kustomization", kust, "--tool", "crane"], capture_output=True, text=True,
                           env=dict(env, FAIL_REF=bad_ref), timeout=60)
        with open(kust) as f:
            check("a tag the registry does not know fails and writes nothing",
                  r.returncode != 0 and f.read() == original, r.stdout + r.stderr)

        r = subprocess.run([PIN, "--kustomization", kust], capture_output=True, text=True, env=env, timeout=60)
        check("pins every image", r.returncode == 0, r.stdout + r.stderr)
        after = rendered_images(kubectl, base)
        want = sorted(f"{ref}@{digest(ref)}" for ref in before)
        check("kustomize renders NAME:TAG@DIGEST for every image", after == want, f"{after} != {want}")
        r = subprocess.run([PIN, "--kustomization", kust], capture_output=True, text=True, env=env, timeout=60)
        with open(kust) as f:
            text = f.read()
        check("pinning again replaces the digest, never adds a second",
              r.returncode == 0 and text.count("digest:") == len(before), text)
        r = subprocess.run([PIN, "--kustomization", kust, "--list"], capture_output=True, text=True, env=env, timeout=60)
        check("--list exits 0 once all are pinned", r.returncode == 0, r.stdout)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
