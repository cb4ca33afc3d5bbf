"""Every MySQL type family through the real reader: exact JSON values, NULL in every type.

One database, one table per family, one reader streaming them all (module fixture); each family
is then its own test. Values are written with sql_mode='' so zero dates and invalid ENUMs can be stored.
"""

from __future__ import annotations

import orjson
import pytest

from tests.support import (
    consume_all,
    execute,
    isolated_config_data,
    mysql,
    remove_test_resources,
    wait_for,
    write_config,
)
from tests.support.cdc import FAMILIES, ReaderThread, insert_family_rows


@pytest.fixture(scope="module")
def streamed(stack: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[int, dict]]:
    """{family: {row id: event}} of one insert of the values (id 1) and one of NULLs (id 2) per family."""
    data = isolated_config_data("types", {"monitored_tables": {f"f_{f}": {"triggers": ["echo"]} for f in FAMILIES}})
    db = data["mysql"]["database"]
    ddl = [f"CREATE DATABASE {db}"]
    for family, cols in FAMILIES.items():
        defs = ", ".join(f"c{i} {t}" for i, (t, _, _) in enumerate(cols))
        ddl.append(f"CREATE TABLE {db}.f_{family} (id INT PRIMARY KEY, {defs})")
    execute(ddl)
    config = write_config(tmp_path_factory.mktemp("types"), data)
    try:
        with ReaderThread(config):
            conn = mysql(db)
            with conn.cursor() as cur:
                insert_family_rows(cur)
            conn.close()
            topics = [config.settings.topics.row_changes(db, f"f_{f}") for f in FAMILIES]

            def collect() -> dict[str, dict[int, dict]] | None:
                out: dict[str, dict[int, dict]] = {}
                for msg in consume_all(config, topics, idle_seconds=1.0):
                    event = orjson.loads(msg.value())
                    out.setdefault(event["source"]["table"][2:], {})[event["after"]["id"]] = event
                return out if sum(len(v) for v in out.values()) >= 2 * len(FAMILIES) else None

            return wait_for(collect, 60, interval=0.5, what="every family's two rows")
    finally:
        execute(f"DROP DATABASE IF EXISTS {db}")
        remove_test_resources(config.settings, [])  # the reader's status key


@pytest.mark.parametrize("family", list(FAMILIES))
def test_type_family_maps_to_exact_json(streamed: dict[str, dict[int, dict]], family: str) -> None:
    cols = FAMILIES[family]
    after = streamed[family][1]["after"]
    expected = {"id": 1, **{f"c{i}": value for i, (_, _, value) in enumerate(cols)}}
    mismatches = {
        k: (cols[int(k[1:])][0], after.get(k), v)
        for k, v in expected.items()
        if k != "id" and (after.get(k) != v or type(after.get(k)) is not type(v))
    }
    assert not mismatches, f"column: (type, got, expected): {mismatches}"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_null_stays_null_in_every_type(streamed: dict[str, dict[int, dict]], family: str) -> None:
    after = streamed[family][2]["after"]
    assert after == {"id": 2, **{f"c{i}": None for i in range(len(FAMILIES[family]))}}
