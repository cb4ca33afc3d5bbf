#!/usr/bin/env bash
# Makes a fresh Debian machine ready: system packages, Kafka jars, the three servers, Debian's
# chromium and chromedriver (the dashboard's browser tests), and the project's virtualenv (.venv).
# Idempotent and quick the second time.
# --venv-only: the virtualenv alone, no server or browser installed or started (what the unit tests need).
set -euo pipefail
SERVICES=1
case "${1:-}" in
  --venv-only) SERVICES=0 ;;
  "") ;;
  *) echo "usage: bash stack/bootstrap.sh [--venv-only]" >&2; exit 2 ;;
esac
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# apt-get install of Debian packages, quietly (output in .state/apt.log, its end shown on failure),
# after one apt-get update per bootstrap run; waits for another apt/dpkg's lock.
APT_UPDATED=0
apt_install() {
  local log="$ROOT/.state/apt.log" apt=(apt-get -o DPkg::Lock::Timeout=600)
  mkdir -p "$ROOT/.state"
  if ! {
    if [ "$APT_UPDATED" = 0 ]; then DEBIAN_FRONTEND=noninteractive "${apt[@]}" update -qq && APT_UPDATED=1; fi &&
      DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq --no-install-recommends "$@"
  } >>"$log" 2>&1; then
    tail -20 "$log" >&2
    echo "bootstrap: apt-get install $* failed; full log: $log" >&2
    exit 1
  fi
}

if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  echo "bootstrap: installing python3-venv" >&2
  apt_install python3-venv
fi

if [ "$SERVICES" = 1 ]; then
  python3 stack/stack.py up
  # The dashboard's browser tests drive Debian's headless chromium through its chromedriver
  # (tests/support/browser.py), never a browser or driver downloaded by selenium-manager.
  if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
    echo "bootstrap: installing chromium and chromium-driver" >&2
    apt_install chromium chromium-driver
  fi
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
