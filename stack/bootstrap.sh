#!/usr/bin/env bash
# Makes a fresh Debian machine ready: system packages, Kafka jars, the three servers, and the
# project's virtualenv (.venv). Idempotent and quick the second time.
# --venv-only: the virtualenv alone, no server installed or started (what the unit tests need).
set -euo pipefail
SERVICES=1
case "${1:-}" in
  --venv-only) SERVICES=0 ;;
  "") ;;
  *) echo "usage: bash stack/bootstrap.sh [--venv-only]" >&2; exit 2 ;;
esac
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  echo "bootstrap: installing python3-venv" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
fi

if [ "$SERVICES" = 1 ]; then
  python3 stack/stack.py up
fi

VENV="$ROOT/.venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
STAMP="$VENV/.cdcflow-installed"
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  echo "bootstrap: installing cdcflow and its dependencies into .venv" >&2
  LOG="$ROOT/.state/pip-install.log"
  mkdir -p "$ROOT/.state"
  if ! { "$VENV/bin/python" -m pip install -q --upgrade pip && "$VENV/bin/python" -m pip install -q -e ".[dev]"; } >"$LOG" 2>&1; then
    tail -40 "$LOG" >&2
    echo "bootstrap: pip install failed; full log: $LOG" >&2
    exit 1
  fi
  echo "$WANT" > "$STAMP"
fi
