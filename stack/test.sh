#!/usr/bin/env bash
# The whole test suite, from nothing: installs and starts what it needs, then runs pytest.
# Extra arguments go to pytest (e.g. `bash stack/test.sh -k conditions`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/stack/bootstrap.sh"
cd "$ROOT"
exec .venv/bin/python -m pytest "$@"
