"""Benchmarks against the local stack, run from the repository root as modules:
`.venv/bin/python -m bench.<name> [--help]` (README "Benchmarks" lists them)."""
