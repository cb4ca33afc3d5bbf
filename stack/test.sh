#!/usr/bin/env bash
# The whole test suite, from nothing: installs and starts what it needs, then runs pytest.
# Extra arguments go to pytest (e.g. `bash stack/test.sh -k conditions`); paths are relative to the
# repo root. When every path given is under tests/unit (e.g. `bash stack/test.sh tests/unit -q`), no
# service is started, only the virtualenv is made ready: the unit tests need no stack.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# True when at least one argument names a test path and all that do are under tests/unit.
# Options and their values (`-k expr`, `-p no:cacheprovider`) are not paths; a value that happens to
# be an existing path outside tests/unit (`--basetemp /tmp/x`) counts as one, which only means the
# stack is started when it was not needed.
unit_only() {
  local arg path found=0
  for arg in "$@"; do
    [[ "$arg" == -* ]] && continue
    path="${arg%%::*}" # a node id: tests/unit/test_x.py::test_y
    if [[ -e "$path" || "$path" == tests/* || "$path" == */tests/* ]]; then
      case "$(realpath -m -- "$path")/" in
        "$ROOT/tests/unit/"*) found=1 ;;
        *) return 1 ;;
      esac
    fi
  done
  [ "$found" = 1 ]
}

if unit_only "$@"; then
  echo "test.sh: unit tests only: the virtualenv, no stack" >&2
  bash "$ROOT/stack/bootstrap.sh" --venv-only
else
  bash "$ROOT/stack/bootstrap.sh"
fi
exec .venv/bin/python -m pytest "$@"
