"""One database write flowing through all four parts, started the way a user starts them (`cdcflow run`)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from plugins.store import RunStore
from schemas.config import Config
from tests.support import cdcflow_running, consume_all, execute, isolated_config_data, wait_for, write_config

RULES = {
    "monitored_tables": {
        "teachers": {
            "triggers": ["data_processor"],
            "operations": ["INSERT", "UPDATE"],
            "conditions": {"is_valid": True},
            "params": {"operation": "validate", "teacher_id": "{after.id}", "lessons": "{after.lessons}"},
        },
    },
}


@pytest.fixture
def pipeline(stack: None, tmp_path: Path) -> Iterator[tuple[Config, subprocess.Popen[bytes]]]:
    data = isolated_config_data("e2e", RULES)
    db = data["mysql"]["database"]
    execute(
        [
            f"CREATE DATABASE {db}",
            f"CREATE TABLE {db}.teachers (id INT PRIMARY KEY, name VARCHAR(50), is_valid BOOLEAN, lessons INT)",
        ]
    )
    config = write_config(tmp_path, data)
    try:
        with cdcflow_running(config, tmp_path / "pipeline.log") as process:
            yield config, process
    finally:
        execute(f"DROP DATABASE IF EXISTS {db}")


def test_insert_runs_the_plugin_in_its_own_venv(pipeline: tuple[Config, subprocess.Popen[bytes]]) -> None:
    config, _process = pipeline
    db = config.settings.mysql.database
    store = RunStore(config.settings)
    execute(
        ["INSERT INTO teachers VALUES (1, 'Ann', TRUE, 1200)", "INSERT INTO teachers VALUES (2, 'Bob', FALSE, 3)"], db
    )  # is_valid false: no run
    results = wait_for(lambda: store.list(plugin="data_processor"), 180, interval=0.2, what="the plugin's result")
    execute("UPDATE teachers SET lessons = 7 WHERE id = 1", db)
    results = wait_for(
        lambda: (r := store.list(plugin="data_processor")) and len(r) >= 2 and r,
        60,
        interval=0.2,
        what="the second result",
    )
    assert len(results) == 2
    by_lessons = {r.output["lessons_pretty"]: r for r in results}
    assert set(by_lessons) == {"1,200", "7"}
    first = by_lessons["1,200"]
    assert first.status == "success" and first.plugin_version == "1.0.0" and first.attempt == 1
    assert first.output["teacher_id"] == "1" and first.output["lessons_in_words"] == "1.2 thousand"
    # the plugin ran in its own virtualenv: it has humanize, and none of the runner's packages
    assert first.output["humanize_version"]
    assert first.output["runner_packages_visible"] == []
    assert Path(first.output["python_prefix"]).resolve().is_relative_to(config.settings.runners.venv_dir.resolve())
    # the run records what caused it: its trigger carries the row before and after the change
    update = by_lessons["7"]
    assert update.trigger and update.trigger["kind"] == "cdc" and update.trigger["op"] == "u"
    assert update.trigger["before"]["lessons"] == 1200 and update.trigger["after"]["lessons"] == 7
    assert update.params == {"operation": "validate", "teacher_id": 1, "lessons": 7}  # as the rule made them
    assert first.trigger_kind == "cdc"
    # every result is also on the results topic
    published = [orjson.loads(m.value()) for m in consume_all(config, [config.settings.topics.results])]
    assert {p["invocation_id"] for p in published} == {r.invocation_id for r in results}
