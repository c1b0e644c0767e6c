#!/usr/bin/env bash
# Autobahn|Testsuite: direct run vs. through takgate ($TAKGATE_BIN).
# Needs .venv (tests/python/requirements.txt) and .venv-autobahn; tests/run
# creates both. Extra arguments go to run.py (--direct-only, --cases 1.* ...).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
exec "$ROOT/.venv/bin/python" "$ROOT/tests/autobahn/run.py" "$@"
