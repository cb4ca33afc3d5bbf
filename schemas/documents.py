"""Reading the documents people write (config YAML/JSON, plugin.json, events, --json): strictly.

The one place where every way a document can fail to load becomes a ConfigError naming the source,
and the line and column where there is one: not found, a directory, unreadable, not UTF-8, YAML or
JSON syntax, nesting deeper than the parser can follow, an impossible unquoted YAML timestamp. Two
things the stock parsers accept silently are refused here because they change what the author
meant: a key given twice in one mapping (both parsers keep the last value) and JSON's non-standard
NaN/Infinity (no other JSON reader takes them back).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError

from schemas.errors import ConfigError


def read_text(path: Path, what: str = "file") -> str:
    """The UTF-8 text of the file at `path`; ConfigError naming it and why it cannot be read."""
    try:
        if path.exists() and not path.is_dir() and not path.is_file():
            raise ConfigError(path, [("", f"not a regular file (a {what} must be one)")])  # a FIFO would block
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, [("", f"{what} not found")]) from None
    except IsADirectoryError:
        raise ConfigError(path, [("", f"is a directory, not a {what}")]) from None
    except PermissionError:
        raise ConfigError(path, [("", f"cannot read the {what}: permission denied")]) from None
    except OSError as e:
        raise ConfigError(path, [("", f"cannot read the {what}: {e.strerror or e}")]) from None
    return decode_utf8(data, path)


def decode_utf8(data: bytes, source: str | Path) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line, column = _line_column(data, e.start)
        where = f"line {line} column {column}"
        raise ConfigError(source, [(where, f"not UTF-8 text (byte 0x{data[e.start]:02x}); save it as UTF-8")]) from None


def _line_column(text: str | bytes, index: int) -> tuple[int, int]:
    newline: Any = b"\n" if isinstance(text, bytes) else "\n"
    return text.count(newline, 0, index) + 1, index - (text.rfind(newline, 0, index) + 1) + 1


class StrictYamlLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping and says where an unquoted
    timestamp is impossible (SafeLoader raises a bare ValueError without a line)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` merges keys that the mapping's own keys may override
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark)
            except TypeError:
                continue  # an unhashable key: the base class says so with its line
            if first is not key_node.start_mark:
                raise ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {first.line + 1})", key_node.start_mark
                )
        return super().construct_mapping(node, deep)

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError as e:
            raise ConstructorError(
                None, None, f"impossible timestamp {node.value!r}: {e} (quote it if it is text)", node.start_mark
            ) from None


StrictYamlLoader.add_constructor("tag:yaml.org,2002:timestamp", StrictYamlLoader.construct_yaml_timestamp)


def parse_yaml(text: str, source: str | Path) -> Any:
    """One YAML document; ConfigError naming `source`, line and column."""
    try:
        return yaml.load(text, Loader=StrictYamlLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ConfigError(source, [(where, f"invalid YAML: {e.problem or e.context}")]) from None
    except yaml.reader.ReaderError as e:
        line, column = _line_column(text, e.position)
        raise ConfigError(source, [(f"line {line} column {column}", f"invalid YAML: {e.reason}")]) from None
    except yaml.YAMLError as e:
        raise ConfigError(source, [("", f"invalid YAML: {e}")]) from None
    except RecursionError:
        raise ConfigError(source, [("", "invalid YAML: nested too deeply")]) from None


class _Refused(ValueError):
    """A value the hooks refuse: a repeated `key`, or a `token` (NaN, 1e400) outside strings."""

    def __init__(self, reason: str, key: str | None = None, token: str | None = None):
        super().__init__(reason)
        self.key, self.token = key, token


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"duplicate key {key!r}", key)
        out[key] = value
    return out


def _no_constant(name: str) -> float:
    raise _Refused(f"{name} is not a JSON number", token=name)


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # 1e400: json makes it infinity, which no other JSON reader takes back
        raise _Refused(f"{text} is beyond a float's range", token=text)
    return value


def parse_json(text: str, source: str | Path) -> Any:
    """One JSON value, strictly (no duplicate keys, NaN, Infinity or a number past a float's range);
    ConfigError naming `source`, line and column."""
    try:
        value = json.loads(
            text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant, parse_float=_finite_float
        )
        if "\\u" in text:  # an escape may be half a surrogate pair: a string no UTF-8 writer can write
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        return value
    except json.JSONDecodeError as e:
        raise ConfigError(source, [(f"line {e.lineno} column {e.colno}", f"invalid JSON: {e.msg}")]) from None
    except _Refused as e:
        line, column = _line_column(text, _refused_position(text, e.key, e.token))
        raise ConfigError(source, [(f"line {line} column {column}", f"invalid JSON: {e}")]) from None
    except UnicodeEncodeError:
        found = _LONE_SURROGATE.search(text)
        line, column = _line_column(text, found.start() if found else 0)
        why = "invalid JSON: a \\u escape that is half a surrogate pair, not a character"
        raise ConfigError(source, [(f"line {line} column {column}", why)]) from None
    except RecursionError:
        raise ConfigError(source, [("", "invalid JSON: nested too deeply")]) from None


# A high surrogate escape not followed by a low one, or a low one alone.
_LONE_SURROGATE = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F])|(?<![0-9a-fA-F])\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)


def _refused_position(text: str, duplicate: str | None, token: str | None) -> int:
    """Where the first repeated key (or `token`) is: the parser's hooks get no positions, so the text
    is walked again with just enough of JSON's grammar (strings, nesting)."""
    keys: list[set[str] | None] = []  # per open bracket: the object's keys so far, None for an array
    expect_key, i = False, 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c == '"':
            try:
                value, end = json.decoder.scanstring(text, i + 1)  # type: ignore[attr-defined]  # public, not in typeshed
            except ValueError:
                return i
            if expect_key and keys and keys[-1] is not None:
                if duplicate is not None and value in keys[-1]:
                    return i
                keys[-1].add(value)
            expect_key, i = False, end
            continue
        if c in "{[":
            keys.append(set() if c == "{" else None)
        elif c in "]}" and keys:
            keys.pop()
        elif token is not None and text.startswith(token, i):
            return i
        expect_key = c in "{," and bool(keys) and keys[-1] is not None
        i += 1
    return 0
