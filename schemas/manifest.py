"""plugin.json: what a plugin is, what it needs and which parameters it takes."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from schemas.documents import parse_json, read_text
from schemas.errors import ConfigError, from_validation_error
from schemas.invocation import Priority
from schemas.values import MAX_NESTING, shown

ParamType = Literal["string", "integer", "number", "boolean", "object", "array", "any"]

PLUGIN_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$"
ENTRY_POINT_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$"
# A command's `{name}` placeholder, or a literal `{{` / `}}`. plugins/worker_command.py fills them with
# the same pattern (the worker has no pydantic, so no schemas; a unit test keeps the two equal).
COMMAND_PLACEHOLDER = r"\{\{|\}\}|\{([^{}]*)\}"
# Besides the declared parameters, a command may name these (the invocation's, for idempotent tools).
COMMAND_CONTEXT_NAMES = ("invocation_id", "attempt", "plugin")
LABEL_MAX_CHARS = 64


class ParameterSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: ParamType = "any"
    required: bool = False
    default: Any = None
    description: str = ""


class RetryPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_retries: int = Field(default=0, ge=0, le=100)
    retry_delay: float = Field(default=1.0, ge=0)
    backoff_factor: float = Field(default=2.0, ge=1.0)
    max_delay: float = Field(default=3600.0, ge=0)


class BatchSettings(BaseModel):
    """A batch plugin's entry point gets a list of invocations per call (plugins/README.md)."""

    model_config = ConfigDict(extra="forbid")

    max_size: int = Field(default=500, ge=1, le=10_000, description="invocations per call at most")
    max_wait_ms: float = Field(
        default=20.0, ge=0, le=60_000, description="how long a call waits for more invocations once it has one"
    )


class PluginManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=PLUGIN_NAME_PATTERN)
    version: str = "0.0.0"
    description: str = ""
    category: str | None = Field(default=None, description="one grouping label, e.g. data_sync (runs list --category)")
    tags: list[str] = Field(default_factory=list, description="labels to find it and its runs by (runs list --tag)")
    entry_point: str | None = Field(
        default=None, pattern=ENTRY_POINT_PATTERN, description="module.function, relative to the plugin folder"
    )
    parameters: dict[str, ParameterSpec] = Field(default_factory=dict)
    command: list[str] | None = Field(
        default=None,
        description="instead of entry_point: a program and its arguments, run in the plugin folder without a "
        "shell; `{param}` placeholders are filled from the parameters, `{{`/`}}` are literal braces",
    )
    dependencies: list[str] = Field(default_factory=list, description="pip requirement specifiers")
    timeout_seconds: float = Field(default=300.0, gt=0)
    retries: RetryPolicy = Field(default_factory=RetryPolicy)
    concurrency: int = Field(default=1, ge=1, le=64)
    priority: Priority = "normal"
    memory_limit_mb: int | None = Field(default=None, ge=16)
    batch: BatchSettings | None = Field(
        default=None, description="call the entry point with a list of invocations, one result per item"
    )

    @field_validator("dependencies")
    @classmethod
    def _no_blank_dependencies(cls, deps: list[str]) -> list[str]:
        from packaging.requirements import InvalidRequirement, Requirement

        for dep in deps:
            if not dep.strip() or dep.strip().startswith("-"):
                raise ValueError(f"not a requirement specifier: {dep!r}")
            try:
                Requirement(dep.strip())  # what pip will parse when the venv is built, long after loading
            except InvalidRequirement as e:
                raise ValueError(f"not a requirement specifier: {dep!r} ({str(e).splitlines()[0]})") from None
        return [d.strip() for d in deps]

    @field_validator("category")
    @classmethod
    def _category_is_a_label(cls, category: str | None) -> str | None:
        return None if category is None else _label(category)

    @field_validator("tags")
    @classmethod
    def _tags_are_labels(cls, tags: list[str]) -> list[str]:
        return list(dict.fromkeys(_label(tag) for tag in tags))

    @field_validator("command")
    @classmethod
    def _command_placeholders_are_declared(cls, command: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if command is None:
            return None
        if not command or not command[0].strip():
            raise ValueError('must start with the program to run, e.g. ["python", "tool.py"]')
        declared = info.data.get("parameters")
        for i, arg in enumerate(command):
            try:
                names = command_placeholders(arg)
            except ValueError as e:
                raise ValueError(f"[{i}] {e}") from None
            for name in names:
                if declared is not None and name not in declared and name not in COMMAND_CONTEXT_NAMES:
                    known = ", ".join([*sorted(declared), *COMMAND_CONTEXT_NAMES])
                    raise ValueError(f"[{i}] {arg!r}: {{{name}}} is not a declared parameter (known: {known})")
        return command

    @model_validator(mode="after")
    def _one_way_to_run(self) -> PluginManifest:
        if why := run_field_problem(self.entry_point is not None, self.command is not None):
            raise ValueError(why)
        return self

    @field_validator("batch")
    @classmethod
    def _batch_needs_an_entry_point(cls, batch: BatchSettings | None, info: ValidationInfo) -> BatchSettings | None:
        if batch is not None and info.data.get("command") is not None:
            raise ValueError("a command plugin runs one program per invocation; batch needs an entry_point")
        return batch

    @model_validator(mode="after")
    def _defaults_match_types(self) -> PluginManifest:
        for pname, spec in self.parameters.items():
            if spec.default is not None and coerce_value(spec.type, spec.default) is _INVALID:
                raise ValueError(f"parameters.{pname}.default: {shown(spec.default)} is not of type {spec.type}")
        return self

    @property
    def module(self) -> str:
        """The entry point's module ("" for a command plugin)."""
        return (self.entry_point or ".").rsplit(".", 1)[0]

    @property
    def function(self) -> str:
        """The entry point's function ("" for a command plugin)."""
        return (self.entry_point or ".").rsplit(".", 1)[1]

    def validate_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """Type-coerce `params` against the declared parameters; raise ParamError listing every problem.

        Undeclared parameters are refused: a typo must not silently fall back to a default.
        """
        problems: list[tuple[str, str]] = []
        out: dict[str, Any] = {}
        for key in params:
            if key not in self.parameters:
                named = key if isinstance(key, str) and key.strip() else repr(key)  # a blank name shows as ''
                problems.append(
                    (named, f"unknown parameter (declared: {', '.join(sorted(self.parameters)) or 'none'})")
                )
        for pname, spec in self.parameters.items():
            if pname in params and params[pname] is not None:
                value = coerce_value(spec.type, params[pname])
                if value is _INVALID:
                    got = shown(params[pname], 80)
                    problems.append((pname, f"expected {spec.type}, got {type(params[pname]).__name__} {got}"))
                elif (why := json_unsafe(value)) is not None:
                    problems.append((pname, why))
                else:
                    out[pname] = value
            elif spec.required:
                problems.append((pname, "required parameter is missing"))
            elif spec.default is not None:
                out[pname] = coerce_value(spec.type, spec.default)
        if problems:
            raise ParamError(self.name, problems)
        return out


def _label(text: str) -> str:
    """A category or tag: trimmed, short, and without commas (the CLI and API take comma lists of them)."""
    label = text.strip()
    if not label or len(label) > LABEL_MAX_CHARS or "," in label or not label.isprintable():
        raise ValueError(f"{text!r} is not a label: 1-{LABEL_MAX_CHARS} printable characters, no comma")
    return label


def command_placeholders(arg: str) -> list[str]:
    """The names of the `{name}` placeholders in one command argument; ValueError for a malformed one."""
    names = []
    for match in re.finditer(COMMAND_PLACEHOLDER, arg):
        name = match.group(1)
        if name is None:
            continue  # `{{` or `}}`
        if not name.isidentifier():
            raise ValueError(f"{arg!r}: {{{name}}} is not a placeholder (write {{{{ and }}}} for literal braces)")
        names.append(name)
    rest = re.sub(COMMAND_PLACEHOLDER, "", arg)
    if "{" in rest or "}" in rest:
        raise ValueError(f"{arg!r}: unmatched brace (write {{{{ and }}}} for literal braces)")
    return names


def run_field_problem(has_entry_point: bool, has_command: bool) -> str | None:
    """Why a plugin.json cannot be run: it needs exactly one of entry_point and command."""
    if has_entry_point and has_command:
        return "give entry_point (a Python function) or command (a program), not both"
    if not has_entry_point and not has_command:
        return "missing: give entry_point (module.function) or command (a program and its arguments)"
    return None


INT64 = 2**63
# orjson (every part's encoder) writes integers in [-2**63, 2**64): a row image may hold a BIGINT
# UNSIGNED column's value up to 2**64 - 1 (cdc/types.py), which the pipeline carries as it is.
UINT64 = 2**64


def json_unsafe(value: Any, path: str = "", *, max_int: int = INT64, _depth: int = 0) -> str | None:
    """Why `value` cannot travel as strict JSON to every part and back (NaN, infinity, an integer past
    64 bits: orjson refuses them, JavaScript and Java lose them; nesting past MAX_NESTING: parsers
    stop), or None. Walks into lists and dicts.

    `max_int=UINT64` accepts unsigned 64-bit integers too: for row images, not for parameters.
    Called per invocation (every parameter, a row's images): the common kinds are settled by their
    exact type first, and a container is walked only when it holds something that needs a look."""
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return None
    if kind is int:
        return None if -INT64 <= value < max_int else _beyond_64_bits(value, path)
    if kind is float:
        return None if math.isfinite(value) else _not_finite(value, path)
    if kind is dict or kind is list:
        if _depth == MAX_NESTING:
            return "too deep"  # to the caller one level up, which names the place (_where_unsafe)
        for child in value.values() if kind is dict else value:
            kind = type(child)
            if kind is str or child is None or kind is bool:
                continue
            if kind is int:
                fine = -INT64 <= child < max_int
            elif kind is float:
                fine = math.isfinite(child)
            elif isinstance(child, int | float | dict | list):
                fine = json_unsafe(child, max_int=max_int, _depth=_depth + 1) is None
            else:
                continue  # a datetime, say: nothing JSON could lose
            if not fine:  # rare: the outermost call walks again to name the place
                return _where_unsafe(value, path, max_int) if _depth == 0 else "unsafe"
        return None
    return _where_unsafe(value, path, max_int, _depth)  # subclasses and other types: the general walk


def _where_unsafe(value: Any, path: str, max_int: int, depth: int = 0) -> str | None:
    if isinstance(value, float) and not math.isfinite(value):
        return _not_finite(value, path)
    if isinstance(value, int) and not isinstance(value, bool) and not -INT64 <= value < max_int:
        return _beyond_64_bits(value, path)
    children = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    if depth == MAX_NESTING and children:
        return f"{path + ' is ' if path else ''}nested more than {MAX_NESTING} levels deep"
    for key, child in children:
        where = f"{path}[{shown(key, 40)}]" if path else f"[{shown(key, 40)}]"
        if (why := _where_unsafe(child, where, max_int, depth + 1)) is not None:
            return why
    return None


def _not_finite(value: float, path: str) -> str:
    return f"{path + ' is ' if path else ''}{value}, which JSON cannot represent"


def _beyond_64_bits(value: int, path: str) -> str:
    try:
        digits = f"{str(value)[:24]}..."
    except ValueError:  # past 4,300 digits str() refuses
        digits = f"{value.bit_length()} bits"
    return f"{path + ' is ' if path else ''}an integer beyond 64 bits ({digits})"


class ParamError(ConfigError):
    """Parameters that do not fit the plugin's declaration."""

    def __init__(self, plugin: str, problems: list[tuple[str, str]]):
        super().__init__(f"plugin {plugin} parameters", problems)


_INVALID = object()
_TRUE = {"true", "1", "yes", "y", "on"}
_FALSE = {"false", "0", "no", "n", "off"}


def _to_string(value: Any) -> Any:
    if isinstance(value, str):
        return value
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return _INVALID
    try:
        return str(value)
    except ValueError:  # an integer past 4,300 digits
        return _INVALID


def _to_boolean(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    return _INVALID


def _to_integer(value: Any) -> Any:
    if isinstance(value, bool):
        return _INVALID
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return _INVALID
    return _INVALID


def _to_number(value: Any) -> Any:
    if isinstance(value, bool):
        return _INVALID
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return _INVALID
    return _INVALID


def _to_json_of(expected: type) -> Callable[[Any], Any]:
    def coerce(value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):  # not JSON; nested past the recursion limit
                return _INVALID
        return value if isinstance(value, expected) else _INVALID

    return coerce


_COERCERS: dict[str, Callable[[Any], Any]] = {
    "any": lambda value: value,
    "string": _to_string,
    "boolean": _to_boolean,
    "integer": _to_integer,
    "number": _to_number,
    "object": _to_json_of(dict),
    "array": _to_json_of(list),
}


def coerce_value(ptype: str, value: Any) -> Any:
    """Coerce a value (often a string from the CLI or a DB column) to a declared type, or return _INVALID."""
    coerce = _COERCERS.get(ptype)
    return _INVALID if coerce is None else coerce(value)


def load_manifest(path: str | Path) -> PluginManifest:
    """Read and validate a plugin.json; every problem names the file and the key."""
    path = Path(path)
    data = parse_json(read_text(path), path)
    if not isinstance(data, dict):
        raise ConfigError(path, [("", "must be a JSON object")])
    # Checked before the model so the error names the field (a model-level check has no field to name).
    if why := run_field_problem(data.get("entry_point") is not None, data.get("command") is not None):
        raise ConfigError(path, [("command" if data.get("command") is not None else "entry_point", why)])
    try:
        return PluginManifest.model_validate(data)
    except ValidationError as e:
        raise from_validation_error(path, e) from None
