"""JSON Schema export of every contract, for consumers written in other languages."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from schemas.invocation import Invocation
from schemas.manifest import PluginManifest
from schemas.result import Result
from schemas.row_change import RowChange
from schemas.rules import RuleSpec, ScheduleSpec
from schemas.settings import Settings
from schemas.trigger_request import ManualTriggerRequest, ScheduleTick

EXPORTED: dict[str, type[BaseModel]] = {
    "row_change": RowChange,
    "invocation": Invocation,
    "result": Result,
    "manual_trigger": ManualTriggerRequest,
    "schedule_tick": ScheduleTick,
    "rule": RuleSpec,
    "schedule": ScheduleSpec,
    "plugin_manifest": PluginManifest,
    "settings": Settings,
}


def export_schemas(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, model in EXPORTED.items():
        path = directory / f"{name}.schema.json"
        path.write_text(json.dumps(model.model_json_schema(), indent=2, default=str) + "\n", encoding="utf-8")
        written.append(path)
    return written
