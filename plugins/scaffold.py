"""`cdcflow plugins new NAME`: a new plugin folder that runs as it is (plugin.json, main.py, README.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from plugins.registry import load_plugin
from schemas.errors import ConfigError

# Stricter than the manifest's pattern: no dots, so the name can never collide with a plugin's
# priority topic (`<invoke_prefix>.<name>.high`) and is usable as a folder name everywhere.
NEW_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


class ScaffoldError(Exception):
    """The plugin cannot be created (bad name, folder exists); nothing was written."""


def manifest_for(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "version": "0.1.0",
        "description": f"{name}: describe what it does.",
        "entry_point": "main.run",
        "parameters": {
            "message": {"type": "string", "required": True, "description": "an example required parameter"},
            "repeat": {"type": "integer", "default": 1, "description": "an example optional parameter"},
        },
        "dependencies": [],
        "timeout_seconds": 60,
        "retries": {"max_retries": 0, "retry_delay": 1, "backoff_factor": 2},
        "concurrency": 1,
    }


MAIN_PY = '''"""{name}: the plugin's code. The runner calls `run` with the validated parameters of plugin.json."""
import logging

log = logging.getLogger("{name}")


def run(message, repeat=1, context=None):
    # context: invocation_id (use it to make side effects idempotent), plugin, attempt, trigger.
    log.info("invocation %s, attempt %s", context["invocation_id"], context["attempt"])
    return {{"echo": " ".join([message] * repeat), "invocation_id": context["invocation_id"]}}


# Optional hooks: delete the ones you do not need.
def before_execution(params, context):
    pass


def after_execution(result, context):
    pass


def on_failure(error, context):
    log.warning("invocation %s failed: %s", context["invocation_id"], error)
'''

README_MD = """# {name}

A cdcflow plugin. `plugin.json` declares its entry point (`main.run`), parameters, pip dependencies
(installed into its own virtualenv), timeout, retries and concurrency; `main.py` holds the code.

    cdcflow plugins test {name} -p message=hello -p repeat=2   # one run in its own venv and worker
    cdcflow trigger {name} -p message=hello                     # a real invocation through Kafka

A running runner picks up changes to this folder by itself (hot reload).
"""


def scaffold_plugin(name: str, directory: Path) -> Path:
    """Create `directory/name` with a working plugin; the folder is new or this raises ScaffoldError."""
    if not NEW_NAME_PATTERN.match(name):
        raise ScaffoldError(
            f"invalid plugin name {name!r}: use a letter first, then letters, digits, '_' or '-' "
            "(at most 64 characters)"
        )
    folder = directory / name
    if folder.exists():
        raise ScaffoldError(f"{folder} already exists; not overwriting it")
    try:
        folder.mkdir(parents=True)
    except OSError as e:
        raise ScaffoldError(f"cannot create {folder}: {e}") from None
    (folder / "plugin.json").write_text(json.dumps(manifest_for(name), indent=2) + "\n", encoding="utf-8")
    (folder / "main.py").write_text(MAIN_PY.format(name=name), encoding="utf-8")
    (folder / "README.md").write_text(README_MD.format(name=name), encoding="utf-8")
    try:
        load_plugin(folder)  # what we wrote must be what discovery accepts
    except ConfigError as e:  # a bug here, not the user's: say so and leave the folder for inspection
        raise ScaffoldError(f"the scaffolded plugin in {folder} does not load: {e}") from None
    return folder
