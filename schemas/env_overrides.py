"""Which CDCFLOW_* environment variable made the settings invalid, so the error names it.

Settings are validated from the file with the environment on top (schemas/settings.py). When that
fails but the file alone is valid, the fault is an override: pydantic-settings reports it against
the field (`kafka.partitions`) or, for a value that is not JSON, as `error parsing value for field
"kafka"`, which would send the reader to a config file that is fine. A variable's value is never
quoted (it may be a password).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from pydantic import ValidationError

from schemas.documents import parse_json
from schemas.errors import ConfigError, location

PREFIX = "CDCFLOW_"
NESTED = "__"
_FIELD = re.compile(r'field "([^"]+)"')


def overrides(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables pydantic-settings reads (names compared without case), by upper-case name."""
    return {name.upper(): name for name in environ if name.upper().startswith(PREFIX)}


def env_error(error: Exception, environ: Mapping[str, str]) -> ConfigError:
    """The problems of `error` (found with the environment, not without it), each against its variable."""
    if not isinstance(error, ValidationError):
        return env_parse_error(error, environ)
    names = overrides(environ)
    problems: list[tuple[str, str]] = []
    for e in error.errors(include_url=False):
        if _FIELD.search(e["msg"]) and "EnvSettingsSource" in e["msg"]:
            problems.extend(env_parse_error(ValueError(e["msg"]), environ).problems)
            continue
        loc = tuple(str(p) for p in e["loc"])
        var, rest = _variable_for(loc, names)
        where = location(e["loc"][len(loc) - len(rest) :]) if rest else ""
        problems.append((var, f"{where}: {e['msg']}" if where else e["msg"]))
    return ConfigError("environment", problems)


def _variable_for(loc: tuple[str, ...], names: dict[str, str]) -> tuple[str, tuple[str, ...]]:
    """The variable that set `loc` (the longest one, CDCFLOW_KAFKA__PARTITIONS before CDCFLOW_KAFKA)
    and the part of `loc` inside its value; without one, every variable of the section."""
    for n in range(len(loc), 0, -1):
        name = PREFIX + NESTED.join(loc[:n]).upper()
        if name in names:
            return names[name], loc[n:]
    section = PREFIX + loc[0].upper() if loc else PREFIX
    return ", ".join(sorted(v for k, v in names.items() if k.startswith(section))) or section + "*", loc[1:]


def env_parse_error(error: Exception, environ: Mapping[str, str]) -> ConfigError:
    """pydantic-settings' SettingsError (a complex field's value is not JSON) against the variable."""
    match = _FIELD.search(str(error))
    section = PREFIX + (match.group(1).upper() if match else "")
    names = {k: v for k, v in overrides(environ).items() if k == section or k.startswith(section + NESTED)}
    for upper, name in sorted(names.items()):
        value = environ[name]
        # Only a section's own variable and structured values are read as JSON.
        if upper == section or value.lstrip()[:1] in ("{", "[", '"'):
            try:
                parse_json(value, name)
            except ConfigError as e:
                return ConfigError("environment", [(name, f"{k}: {r}" if k else r) for k, r in e.problems])
    listed = ", ".join(sorted(names.values())) or section
    return ConfigError("environment", [(listed, "not valid JSON for a list or mapping")])
