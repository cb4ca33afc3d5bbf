"""Hot reload of the rules file: the decisions (a running worker: tests/integration/test_streams_reload.py)."""

from __future__ import annotations

import copy
from pathlib import Path

from streams.reload import RulesWatcher, needs_restart
from tests.support import isolated_config_data, write_config
from tests.support.streams import RELOAD_RULES, rewrite, with_condition


def test_watcher_swaps_keeps_on_error_and_asks_for_a_restart_on_a_new_table(tmp_path: Path) -> None:
    data = isolated_config_data("rl", RELOAD_RULES)
    config = write_config(tmp_path, data)
    watcher = RulesWatcher(config)
    assert watcher.check().action == "unchanged"
    rewrite(config.path, data)  # same content, new mtime: not a reload
    assert watcher.check().action == "unchanged"

    rewrite(config.path, with_condition(data, "b"))
    swap = watcher.check()
    assert swap.action == "swap" and swap.matcher is not None
    event = {
        "op": "u",
        "before": None,
        "after": {"status": "b"},
        "event_id": "e",
        "source": {"db": "shop", "table": "orders"},
    }
    assert [p.invocation["params"] for p in swap.matcher.match(event)] == [{"message": "b"}]

    broken = with_condition(data, "b")
    broken["monitored_tables"]["shop.orders"]["triggers"] = ["nosuch"]
    rewrite(config.path, broken)
    invalid = watcher.check()
    assert invalid.action == "invalid" and "unknown plugin 'nosuch'" in invalid.reason and "rule r" in invalid.reason
    assert watcher.check().action == "unchanged"  # reported once
    config.path.write_text("monitored_tables: [unclosed\n", encoding="utf-8")
    assert watcher.check().action == "invalid"

    grown = with_condition(data, "b")
    grown["monitored_tables"]["shop.items"] = {"triggers": ["echo"]}
    rewrite(config.path, grown)
    restart = watcher.check()
    assert restart.action == "restart" and restart.reason == "monitored tables changed (+shop.items)"


def test_needs_restart_for_settings_debounce_and_schedules(tmp_path: Path) -> None:
    data = isolated_config_data("rl", RELOAD_RULES)
    old = write_config(tmp_path, data)
    changed = copy.deepcopy(data)
    changed["kafka"]["partitions"] = 3
    assert needs_restart(old, write_config(tmp_path, changed)) == "settings changed"
    deb = copy.deepcopy(data)
    deb["monitored_tables"]["shop.orders"]["debounce_ms"] = 100
    assert needs_restart(old, write_config(tmp_path, deb)) == "debounce switched on"
    sch = {**copy.deepcopy(data), "schedules": {"s": {"plugin": "echo", "interval_seconds": 5}}}
    assert needs_restart(old, write_config(tmp_path, sch)) == "schedules added"
    assert needs_restart(old, write_config(tmp_path, with_condition(data, "z"))) is None
