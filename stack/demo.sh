#!/usr/bin/env bash
# The main job on a fresh machine: installs and starts the stack, runs the whole pipeline with the
# bundled config and plugins, writes a demo row and shows the plugin's result.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/stack/bootstrap.sh"
cd "$ROOT"
exec .venv/bin/python stack/demo.py "$@"
