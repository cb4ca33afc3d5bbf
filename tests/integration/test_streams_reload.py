"""Hot reload of the rules file in a running worker against the real Kafka."""

from __future__ import annotations

from pathlib import Path

from schemas.runtime.kafka_topics import ensure_topics
from tests.support import isolated_config_data, remove_test_resources, wait_for, write_config
from tests.support.streams import RELOAD_RULES, Collector, Worker, change, rewrite, with_condition


def test_running_worker_reloads_good_edits_keeps_rules_on_broken_ones_and_subscribes_new_tables(
    stack: None, tmp_path: Path
) -> None:
    from confluent_kafka import Producer

    data = isolated_config_data("rl", RELOAD_RULES)
    config = write_config(tmp_path, data)
    settings = config.settings
    orders, items = settings.topics.row_changes("shop", "orders"), settings.topics.row_changes("shop", "items")
    invoke = settings.topics.invoke("echo")
    ensure_topics(settings, [orders, items, invoke])
    worker = Worker(config, tmp_path / "worker.log")
    collector = Collector(config, invoke)
    producer = Producer(settings.kafka_config(**{"acks": "all"}))

    def log_has(text: str) -> bool:
        return text in worker.log_path.read_text(errors="replace")

    def messages() -> list[str]:
        return [m["params"].get("message", m["trigger"]["table"]) for m in collector.poll()]

    worker.start()
    try:
        change(producer, config, 1, "a")
        wait_for(lambda: messages() == ["a"], 120, what="the first invocation")

        rewrite(config.path, with_condition(data, "b"))  # good edit: swapped in place
        wait_for(lambda: log_has("rules reloaded from"), 20, what="the reload")
        change(producer, config, 1, "a")
        change(producer, config, 1, "b")
        wait_for(lambda: messages() == ["a", "b"], 30, what="the new condition to apply")

        broken = with_condition(data, "c")
        broken["monitored_tables"]["shop.orders"]["conditions"] = {"status": {"bogus": 1}}
        rewrite(config.path, broken)  # broken edit: the running rules stay
        wait_for(lambda: log_has("keeping the running rules"), 20, what="the broken edit to be reported")
        assert log_has("conditions.status: unknown operator(s) bogus")
        change(producer, config, 1, "b")
        wait_for(lambda: messages() == ["a", "b", "b"], 30, what="the previous rules to still apply")

        grown = with_condition(data, "b")
        grown["monitored_tables"]["shop.items"] = {"name": "items", "triggers": ["echo"], "params": {}}
        rewrite(config.path, grown)  # a new table: the worker restarts itself and consumes its topic
        wait_for(lambda: log_has("restarting the worker"), 20, what="the restart")
        producer.produce(
            items,
            key=b'{"id":1}',
            value=(
                b'{"before":null,"after":{"id":1},"op":"c","ts_ms":1,"event_id":"1:mysql-bin.000001:5:0",'
                b'"source":{"db":"shop","table":"items"}}'
            ),
        )
        producer.flush(10)
        wait_for(lambda: "shop.items" in messages(), 120, what="the new table's invocation")
        change(producer, config, 1, "b")
        wait_for(lambda: messages().count("b") == 3, 30, what="the old table still served after the restart")
        assert worker.process is not None and worker.process.poll() is None, "the worker did not survive its restart"
        assert len({m["invocation_id"] for m in collector.poll()}) == len(collector.poll()), "duplicate invocation"
    finally:
        assert worker.stop() == 0
        collector.consumer.close()
        print(worker.log_path.read_text(errors="replace")[-5000:])
        remove_test_resources(settings, [orders, items, invoke])
