"""Reading people's documents strictly (schemas/documents.py) and blaming the right environment variable
(schemas/env_overrides.py): every failure is a ConfigError naming the source and, where there is one,
the line and column."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.config import load_config, parse_settings
from schemas.documents import parse_json, parse_yaml, read_text
from schemas.errors import ConfigError


def error_of(call: object, *args: object) -> str:
    with pytest.raises(ConfigError) as caught:
        call(*args)  # type: ignore[operator]
    return str(caught.value)


def test_a_yaml_key_given_twice_is_an_error_naming_it_and_both_lines() -> None:
    text = "kafka:\n  partitions: 2\n  bootstrap_servers: x\n  partitions: 3\n"
    assert error_of(parse_yaml, text, "c.yaml") == (
        "c.yaml: line 4 column 3: invalid YAML: duplicate key 'partitions' (first given on line 2)"
    )
    assert "duplicate key 'a'" in error_of(parse_yaml, "{a: 1, b: 2, a: 3}", "c.yaml")


def test_yaml_merge_keys_may_still_be_overridden() -> None:
    text = "base: &b {x: 1, y: 2}\nthing:\n  <<: *b\n  x: 5\n"
    assert parse_yaml(text, "c.yaml") == {"base": {"x": 1, "y": 2}, "thing": {"x": 5, "y": 2}}


def test_an_impossible_unquoted_timestamp_names_its_line() -> None:
    message = error_of(parse_yaml, "schedules:\n  once:\n    at: 2026-13-45T99:00:00\n", "c.yaml")
    assert message.startswith("c.yaml: line 3 column 9: invalid YAML: impossible timestamp '2026-13-45T99:00:00'")
    assert parse_yaml("at: '2026-13-45'\n", "c.yaml") == {"at": "2026-13-45"}  # quoted: text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: [1, 2\n", "c.yaml: line 2 column 1: invalid YAML:"),
        ("a: 1\0\n", "c.yaml: line 1 column 5: invalid YAML:"),
        ("a: " + "[" * 3000, "c.yaml: invalid YAML: nested too deeply"),
        ("a: !!python/object/apply:os.system [x]\n", "c.yaml: line 1 column 4: invalid YAML:"),
    ],
)
def test_yaml_syntax_errors_name_line_and_column(text: str, expected: str) -> None:
    assert error_of(parse_yaml, text, "c.yaml").startswith(expected)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{\n  "a": {"b": 1,\n    "b": 2}\n}', "p.json: line 3 column 5: invalid JSON: duplicate key 'b'"),
        ('{"x": [1, {"a": 1}], "a": 2, "x": 3}', "p.json: line 1 column 30: invalid JSON: duplicate key 'x'"),
        ('{"n": "NaN",\n "m": [1, NaN]}', "p.json: line 2 column 11: invalid JSON: NaN is not a JSON number"),
        ('{"m": -Infinity}', "p.json: line 1 column 7: invalid JSON: -Infinity is not a JSON number"),
        ('{"s": "1e400",\n "m": [1e400]}', "p.json: line 2 column 8: invalid JSON: 1e400 is beyond a float's range"),
        ('{"a": 1,}', "p.json: line 1 column 9: invalid JSON: Expecting property name enclosed in double quotes"),
        ("[" * 5000, "p.json: invalid JSON: nested too deeply"),
    ],
)
def test_json_is_strict_and_errors_name_line_and_column(text: str, expected: str) -> None:
    assert error_of(parse_json, text, "p.json") == expected


def test_half_a_surrogate_pair_is_refused_and_a_whole_one_kept() -> None:
    message = error_of(parse_json, '{"a": 1,\n "m": "x\\udc00"}', "p.json")
    assert (
        message == "p.json: line 2 column 9: invalid JSON: a \\u escape that is half a surrogate pair, not a character"
    )
    assert "line 1 column 8" in error_of(parse_json, '{"m": "\\ud800"}', "p.json")
    assert parse_json('{"m": "\\ud83d\\ude00", "n": "a\\\\ud800"}', "p.json") == {"m": "\U0001f600", "n": "a\\ud800"}


def test_the_same_key_in_two_objects_is_fine() -> None:
    assert parse_json('{"a": {"k": 1}, "b": {"k": 2}, "k": 3}', "p.json") == {"a": {"k": 1}, "b": {"k": 2}, "k": 3}


def test_files_that_cannot_be_read_are_named_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    (tmp_path / "latin.yaml").write_bytes(b"a: 1\nb: caf\xe9\n")
    assert error_of(read_text, tmp_path / "dir", "config file").endswith("dir: is a directory, not a config file")
    assert error_of(read_text, tmp_path / "nope", "config file").endswith("nope: config file not found")
    assert "loop: cannot read the file: Too many levels of symbolic links" in error_of(read_text, tmp_path / "loop")
    assert error_of(read_text, tmp_path / "latin.yaml").endswith(
        "latin.yaml: line 2 column 7: not UTF-8 text (byte 0xe9); save it as UTF-8"
    )
    assert "loop: cannot read" in error_of(load_config, tmp_path / "loop")


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"CDCFLOW_KAFKA": "{oops"}, "environment: CDCFLOW_KAFKA: line 1 column 2: invalid JSON:"),
        ({"CDCFLOW_KAFKA": '{"partition": 3}'}, "environment: CDCFLOW_KAFKA: partition: Extra inputs"),
        ({"CDCFLOW_KAFKA__PARTITIONS": "0"}, "environment: CDCFLOW_KAFKA__PARTITIONS: Input should be greater"),
        ({"cdcflow_kafka__partitions": "x"}, "environment: cdcflow_kafka__partitions: Input should be a valid"),
        ({"CDCFLOW_RUNNERS__PLUGIN_DIRS": "[x"}, "environment: CDCFLOW_RUNNERS__PLUGIN_DIRS: line 1 column 2"),
    ],
)
def test_a_bad_override_names_the_variable_not_the_file(
    env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    message = error_of(parse_settings, {"kafka": {"partitions": 2}}, "c.yaml", Path("/"))
    assert message.startswith(expected)
    assert "c.yaml" not in message


def test_the_files_own_fault_is_named_against_the_file_even_with_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDCFLOW_KAFKA__PARTITIONS", "x")
    message = error_of(parse_settings, {"kafka": {"partitions": 0}}, "c.yaml", Path("/"))
    assert message == "c.yaml: kafka.partitions: Input should be greater than or equal to 1"
