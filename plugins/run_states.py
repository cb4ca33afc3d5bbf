"""The in-progress states of a run, as the runner records them (plugins/store.py keeps them apart from
results): `pending` once it took the invocation, `running` once a worker starts it.

A state is Result-shaped JSON, so every reader of runs can show it: `started_at` is when the state
began (accepted, or started), `finished_at` the same moment (nothing has finished), `duration_ms` 0;
`host` and `worker_pid` say where it runs. Built with orjson from the parsed invocation (a few
microseconds; the runner writes them per batch, never one round trip per invocation).
"""

from __future__ import annotations

import socket
from datetime import UTC, datetime
from typing import Any

import orjson

from plugins.execution import RUNNER_ID
from schemas.invocation import Invocation

HOST = socket.gethostname()


def iso(at: float) -> str:
    """An epoch time as the ISO-8601 text a state carries (made once per batch for `pending`: orjson
    takes ~1 us per datetime object, a str costs nothing)."""
    return datetime.fromtimestamp(at, UTC).isoformat()


def state_payload(
    invocation: Invocation, plugin_version: str, status: str, when: str, worker_pid: int | None = None
) -> bytes:
    """`when`: iso() of the moment the state began."""
    state: dict[str, Any] = {
        "attempt": invocation.attempt,  # first: the store's scripts read it with a pattern, not a JSON parse
        "invocation_id": invocation.invocation_id,
        "plugin": invocation.plugin,
        "plugin_version": plugin_version,
        "status": status,
        "started_at": when,
        "finished_at": when,
        "duration_ms": 0.0,
        "trigger_kind": invocation.trigger.kind,
        "runner": RUNNER_ID,
        "host": HOST,
        "worker_pid": worker_pid,
        "params": invocation.params,
    }
    try:
        return orjson.dumps(state)
    except (TypeError, orjson.JSONEncodeError):  # params JSON cannot carry (rejected when the run starts)
        state["params"] = None
        return orjson.dumps(state)
