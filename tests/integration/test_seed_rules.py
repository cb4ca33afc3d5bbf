"""Seed 000's own monitored_tables example, as YAML, through the whole pipeline (`cdcflow run`: reader,
streams worker, runners) with the bundled data_processor and es_indexer and no params at all."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis
import yaml

from plugins.store import RunStore
from schemas.config import Config, load_config
from schemas.result import Result
from tests.support import (
    REPO_ROOT,
    cdcflow_running,
    execute,
    isolated_config_data,
    remove_test_resources,
    wait_for,
)

TABLE = "derived_intl_teacher_data"
# Seed 000 (../shared/seeds/000_*.md) gives this as a Python dict; here it is the same rule in YAML.
SEED_000 = f"""
monitored_tables:
  {TABLE}:
    triggers: [data_processor, es_indexer]
    conditions: {{is_valid: true}}
    operations: [INSERT, UPDATE]
"""
PLUGINS = ("data_processor", "es_indexer")


@pytest.fixture
def seed_config(stack: None, tmp_path: Path) -> Iterator[Config]:
    data = isolated_config_data("seed")
    db = data["mysql"]["database"]
    execute(
        [
            f"CREATE DATABASE {db}",
            f"CREATE TABLE {db}.{TABLE} (id INT PRIMARY KEY, teacher_id VARCHAR(32), name VARCHAR(64), "
            "country CHAR(2), lessons INT, is_valid BOOLEAN)",
        ]
    )
    path = tmp_path / "cdcflow.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False) + SEED_000, encoding="utf-8")
    config = load_config(path)
    try:
        yield config
    finally:
        execute(f"DROP DATABASE IF EXISTS {db}")
        topics = [config.settings.topics.row_changes(db, TABLE)]
        topics += [config.settings.topics.invoke(p, pr) for p in PLUGINS for pr in ("normal", "high")]
        topics += [config.settings.topics.results, config.settings.topics.dlq, config.settings.topics.triggers]
        remove_test_resources(config.settings, topics)


def rules_check(config: Config) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "console.cli", "--config", str(config.path), "rules", "check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_rules_check_accepts_the_seed_and_checks_placeholders_against_the_table(seed_config: Config) -> None:
    ok = rules_check(seed_config)
    assert ok.returncode == 0, ok.stderr
    assert f"ok  {TABLE}: " in ok.stdout and "-> data_processor, es_indexer" in ok.stdout
    assert "columns not checked" not in ok.stderr  # the table exists: its columns were read

    assert seed_config.path is not None
    text = seed_config.path.read_text(encoding="utf-8")
    typo = text.replace(
        "triggers: [data_processor, es_indexer]", 'triggers: [echo]\n    params: {message: "{after.nmae}"}'
    )
    seed_config.path.write_text(typo, encoding="utf-8")
    bad = rules_check(seed_config)
    assert bad.returncode == 1
    assert f"monitored_tables.{TABLE} (rule {TABLE}).params.message: no column 'nmae' in " in bad.stderr
    assert "Traceback" not in bad.stderr


def test_a_required_parameter_the_table_cannot_bind_stops_rules_check_and_the_worker(
    seed_config: Config, tmp_path: Path
) -> None:
    """The table exists and has no `address` column: neither `rules check` nor the streams worker
    accepts a rule that would run `mailer` without its required `address`."""
    plugin = tmp_path / "plugins" / "mailer"
    plugin.mkdir(parents=True)
    (plugin / "main.py").write_text("def send(address, operation=None):\n    return address\n")
    manifest = {"name": "mailer", "entry_point": "main.send", "parameters": {"address": {"required": True}}}
    (plugin / "plugin.json").write_text(orjson.dumps(manifest).decode())
    assert seed_config.path is not None
    data = yaml.safe_load(seed_config.path.read_text(encoding="utf-8"))
    data["runners"]["plugin_dirs"].append(str(tmp_path / "plugins"))
    data["monitored_tables"][TABLE] = {"name": "notify", "triggers": ["mailer"]}
    seed_config.path.write_text(yaml.safe_dump(data), encoding="utf-8")
    expected = (
        f"monitored_tables.{TABLE} (rule notify).triggers[0]: plugin mailer requires parameter 'address', "
        f"which the rule does not give and which is neither a column of {data['mysql']['database']}.{TABLE} nor one of"
    )
    checked = rules_check(seed_config)
    assert checked.returncode == 1 and expected in checked.stderr, checked.stderr
    worker = subprocess.run(
        [sys.executable, "-m", "console.cli", "--config", str(seed_config.path), "streams", "worker"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 1 and expected in worker.stderr, worker.stderr[-3000:]
    assert "Traceback" not in worker.stderr


def runs(store: RunStore) -> list[Result]:
    return [r for plugin in PLUGINS for r in store.list(plugin=plugin)]


def test_seed_000_rule_runs_both_bundled_plugins_with_parameters_bound_by_name(
    seed_config: Config, tmp_path: Path
) -> None:
    settings = seed_config.settings
    db = settings.mysql.database
    store = RunStore(settings)
    es = redis.Redis.from_url(settings.redis.url.get_secret_value())
    valid, invalid, later = (random.randint(10**8, 10**9) for _ in range(3))  # es_indexer's keys are not per test
    doc_keys = [f"es_indexer:{TABLE}:{i}" for i in (valid, invalid, later)]
    results: list[Result] = []
    try:
        with cdcflow_running(seed_config, tmp_path / "pipeline.log"):
            execute(
                [
                    f"INSERT INTO {TABLE} VALUES ({valid}, 'T-{valid}', 'Ann', 'DE', 1200, TRUE)",
                    f"INSERT INTO {TABLE} VALUES ({invalid}, 'T-{invalid}', 'Bob', 'FR', 3, FALSE)",
                    f"UPDATE {TABLE} SET lessons = 7 WHERE id = {valid}",
                    f"UPDATE {TABLE} SET name = 'Bobby' WHERE id = {invalid}",  # still not valid
                    f"DELETE FROM {TABLE} WHERE id = {invalid}",  # DELETE is not among the operations
                    f"INSERT INTO {TABLE} VALUES ({later}, 'T-{later}', 'Cy', 'JP', 0, TRUE)",
                ],
                db,
            )
            results = wait_for(lambda: len(r := runs(store)) >= 6 and r, 240, interval=0.3, what="six runs")
            time.sleep(3)  # anything the invalid row wrongly caused would be recorded by now
            results = runs(store)
        by = {(r.plugin, r.params["operation"] if r.params else None, r.params and _id_of(r)): r for r in results}
        assert len(results) == 6, [(r.plugin, r.params) for r in results]
        assert all(r.status == "success" for r in results), [(r.plugin, r.error) for r in results]
        assert all(r.trigger and r.trigger["rule"] == TABLE for r in results)

        inserted = by[("data_processor", "INSERT", valid)]
        assert inserted.params == {"operation": "INSERT", "teacher_id": f"T-{valid}", "is_valid": 1, "lessons": 1200}
        assert inserted.output and inserted.output["teacher_id"] == f"T-{valid}" and inserted.output["status"] == "ok"
        assert inserted.output["lessons_pretty"] == "1,200"
        updated = by[("data_processor", "UPDATE", valid)]
        assert updated.params == {"operation": "UPDATE", "teacher_id": f"T-{valid}", "is_valid": 1, "lessons": 7}

        row = {"id": valid, "teacher_id": f"T-{valid}", "name": "Ann", "country": "DE", "lessons": 1200, "is_valid": 1}
        es_insert, es_update = by[("es_indexer", "INSERT", valid)], by[("es_indexer", "UPDATE", valid)]
        assert es_insert.params == {"row": row, "operation": "INSERT", "table": TABLE, "event_id": _event_id(es_insert)}
        assert es_update.params == {
            "row": {**row, "lessons": 7},
            "operation": "UPDATE",
            "table": TABLE,
            "event_id": _event_id(es_update),
        }
        # Runs of one row's changes are not ordered (es_indexer has two workers): the older change's
        # write is `stale` when it comes second, and the document ends as the newer change left it.
        outcomes = {r.params["operation"]: (r.output or {}).get("result") for r in (es_insert, es_update)}  # type: ignore[index]
        assert outcomes in ({"INSERT": "created", "UPDATE": "updated"}, {"INSERT": "stale", "UPDATE": "created"})
        assert all(
            (r.output or {}).get("_index") == TABLE and (r.output or {}).get("_id") == str(valid)
            for r in (es_insert, es_update)
        )
        document = es.hgetall(doc_keys[0])
        assert orjson.loads(document[b"_source"]) == {**row, "lessons": 7}

        assert {key[2] for key in by} == {valid, later}  # the is_valid = false row ran nothing
        assert not es.exists(doc_keys[1])
    finally:
        es.delete(*doc_keys, *(f"es_indexer:_applied:{r.invocation_id}" for r in results))
        es.close()
        store.close()


def _id_of(result: Result) -> int | None:
    params = result.params or {}
    if "row" in params:
        return int(params["row"]["id"])
    teacher = params.get("teacher_id")
    return int(str(teacher).removeprefix("T-")) if teacher else None


def _event_id(result: Result) -> str:
    assert result.trigger is not None
    return str(result.trigger["event_id"])
