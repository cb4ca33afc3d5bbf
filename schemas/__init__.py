"""The contracts every part of cdcflow shares: events, config, plugin manifests, topic names."""

from schemas.config import Config, load_config
from schemas.errors import ConfigError
from schemas.invocation import (
    CdcTrigger,
    Invocation,
    ManualTrigger,
    ReplayTrigger,
    RetryTrigger,
    ScheduleTrigger,
    invocation_id_for,
)
from schemas.manifest import ParamError, PluginManifest, load_manifest
from schemas.result import ErrorInfo, Result
from schemas.row_change import RowChange, Source, make_event_id
from schemas.rules import Rule, RulesConfig, Schedule
from schemas.settings import Settings
from schemas.trigger_request import ManualTriggerRequest, ScheduleTick

__all__ = [
    "CdcTrigger",
    "Config",
    "ConfigError",
    "ErrorInfo",
    "Invocation",
    "ManualTrigger",
    "ManualTriggerRequest",
    "ParamError",
    "PluginManifest",
    "ReplayTrigger",
    "Result",
    "RetryTrigger",
    "RowChange",
    "Rule",
    "RulesConfig",
    "Schedule",
    "ScheduleTick",
    "ScheduleTrigger",
    "Settings",
    "Source",
    "invocation_id_for",
    "load_config",
    "load_manifest",
    "make_event_id",
]
