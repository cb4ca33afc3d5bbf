#!/usr/bin/env bash
# Lint, format and type checks with the project's own config (pyproject.toml); non-zero on any finding.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash "$ROOT/stack/bootstrap.sh" --venv-only
echo "lint: ruff check" >&2
.venv/bin/ruff check .
echo "lint: ruff format --check" >&2
.venv/bin/ruff format --check .
echo "lint: mypy" >&2
.venv/bin/mypy
