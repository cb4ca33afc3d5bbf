"""The user story behind replay: a rule had a bug, it is fixed, and the changes it missed are replayed
through the running pipeline (`cdcflow run`: reader, streams worker, runners) with the fixed rule."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import orjson
from click.testing import CliRunner

from console.cli import cli
from plugins.store import RunStore
from tests.support import (
    cdcflow_running,
    consume_all,
    execute,
    isolated_config_data,
    remove_test_resources,
    wait_for,
    write_config,
)


def rules(condition: bool) -> dict:
    return {
        "monitored_tables": {
            "items": {
                "name": "items_ok",
                "triggers": ["echo"],
                "operations": ["INSERT"],
                "conditions": {"ok": condition},
                "params": {"message": "item {after.id}"},
            }
        }
    }


def test_fixed_rule_replays_the_missed_changes_through_the_running_pipeline(stack: None, tmp_path: Path) -> None:
    data = isolated_config_data("replaye2e", rules(False))  # the bug: `ok: false` where `ok: true` was meant
    db = data["mysql"]["database"]
    execute([f"CREATE DATABASE {db}", f"CREATE TABLE {db}.items (id INT PRIMARY KEY, ok BOOLEAN)"])
    config = write_config(tmp_path, data)
    store = RunStore(config.settings)
    try:
        with cdcflow_running(config, tmp_path / "pipeline.log"):
            execute(
                [
                    "INSERT INTO items VALUES (1, TRUE)",
                    "INSERT INTO items VALUES (2, TRUE)",
                    "INSERT INTO items VALUES (3, FALSE)",
                    "INSERT INTO items VALUES (4, TRUE)",
                ],
                db,
            )
            first = wait_for(lambda: store.list(plugin="echo"), 180, interval=0.2, what="the buggy rule's one run")
            assert [r.output["message"] for r in first] == ["item 3"]

            write_config(tmp_path, {**data, **rules(True)})  # the fix
            code_out = CliRunner().invoke(cli, ["-c", str(config.path), "replay", "items", "--since", "1h"])
            assert code_out.exit_code == 0, code_out.output
            assert "sent 3 to" in code_out.output
            runs = wait_for(
                lambda: (r := store.list(plugin="echo")) and len(r) >= 4 and r,
                120,
                interval=0.2,
                what="the replayed runs",
            )
            replayed = [r for r in runs if r.trigger_kind == "replay"]
            assert sorted(r.output["message"] for r in replayed) == ["item 1", "item 2", "item 4"]
            assert all(r.status == "success" for r in runs)

            # the same command again sends nothing; every invocation ran exactly once
            again = CliRunner().invoke(cli, ["-c", str(config.path), "replay", "items", "--since", "1h"])
            assert again.exit_code == 0 and "sent" not in again.output.replace("sent 0", "")
            invoked = Counter(m.key() for m in consume_all(config, [config.settings.topics.invoke("echo")]))
            assert len(invoked) == 4 and set(invoked.values()) == {1}
            results = Counter(
                orjson.loads(m.value())["invocation_id"] for m in consume_all(config, [config.settings.topics.results])
            )
            assert set(results) == {r.invocation_id for r in runs} and set(results.values()) == {1}
    finally:
        store.close()
        execute(f"DROP DATABASE IF EXISTS {db}")
        remove_test_resources(config.settings, [])
