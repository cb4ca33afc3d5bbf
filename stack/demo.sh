#!/usr/bin/env bash
# The main job on a fresh machine: installs and starts the stack, runs the whole pipeline with the
# bundled config and plugins, then a live view of rows being written, the plugin runs they trigger,
# a schedule firing and a manual trigger, each with its timing (stack/demo.py; --keep to stay).
# It also prints the web dashboard's URL (http://127.0.0.1:8080/) and an admin token to sign in
# with; the dashboard is up while the demo runs (with --keep, until Ctrl-C).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/stack/bootstrap.sh"
cd "$ROOT"
exec .venv/bin/python stack/demo.py "$@"
