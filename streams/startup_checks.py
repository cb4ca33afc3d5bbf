"""What the components refuse or fail on at start, found before starting them.

`cdcflow config check`, `cdcflow rules check` and `POST /api/rules/check` share this, so a green
check means `cdcflow run` starts. Each check is the component's own code, called here as it is at
start, not a copy:

- every client: the Kafka client options (a librdkafka client is created; no connection), the MySQL
  TLS files, the plugin directories; the Redis URL, alert webhook URLs and SMTP settings are checked
  by the settings model itself when the config is read (schemas/settings.py), so every command
  refuses them;
- the reader (cdc/filters.py): nothing to read, a bad table pattern, a `cdc.exclude` covering a
  monitored table; the topic names every component creates at start, by Kafka's rule for them;
- the streams worker: the rules and schedules against plugin.json and, when the tables exist, their
  columns (streams/validation.py, streams/table_columns.py); the Faust credentials made from
  kafka.client_options (streams/kafka_auth.py);
- the runner: each plugin's plugin.json (plugins/registry.py) and one worker of each started in the
  plugin's own venv (plugins/start_check.py: the entry point imports and the function exists).

Not checked: what needs the servers (MySQL login and binlog, Kafka and Redis reachable), which
`cdcflow health` and the components' logs report once they run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cdc.filters import selection_problems
from plugins.registry import discover
from plugins.start_check import plugin_start_problems
from schemas.config import Config
from schemas.errors import ConfigError
from schemas.runtime.kafka_topics import topic_name_problem
from schemas.settings import Settings
from streams.kafka_auth import credential_problems
from streams.table_columns import TableColumns
from streams.validation import rule_where, validated_matcher

Problems = list[tuple[str, str]]


@dataclass
class StartupReport:
    problems: Problems = field(default_factory=list)  # (where, why): ConfigError's problems
    plugins: list[str] = field(default_factory=list)  # the plugins found
    notes: list[str] = field(default_factory=list)  # what could not be checked, and why


def startup_report(config: Config, *, build_venvs: bool) -> StartupReport:
    """Every problem a component would meet at start with `config`. `build_venvs`: build a plugin's
    missing venv as the runner would (False: leave that plugin's start unchecked, with a note)."""
    settings = config.settings
    report = StartupReport(problems=client_problems(settings))
    report.problems += selection_problems(config.rules.tables(), settings.cdc)
    report.problems += credential_problems(settings.kafka.client_options)
    found = discover(settings.runners.plugin_dirs)
    report.plugins = sorted(found.plugins)
    report.problems += topic_problems(config, found.plugins)
    report.problems += [(f"plugin {p.path}", p.message) for p in found.problems]
    columns = TableColumns(settings)  # placeholders and bound parameters against existing tables
    try:
        validated_matcher(config, columns)
    except ConfigError as e:
        report.problems += e.problems
    finally:
        columns.close()
    if columns.unreachable:
        report.notes.append(columns.unreachable)
    started = plugin_start_problems(settings, found.plugins.values(), build_venvs=build_venvs)
    report.problems += started.problems
    if started.unchecked:
        report.notes.append(f"plugins not started, their venv is not built yet: {', '.join(started.unchecked)}")
    return report


def client_problems(settings: Settings) -> Problems:
    """What the clients every component makes would fail on at first use, found without connecting."""
    from confluent_kafka import KafkaException, Producer

    problems: Problems = []
    try:
        # librdkafka checks every property name and value when a client is created (no connection yet).
        Producer(settings.kafka_config(**{"socket.connection.setup.timeout.ms": 1000}))
    except KafkaException as e:
        problems.append(("kafka.client_options", str(e.args[0])))
    tls = settings.mysql.ssl
    if tls is not None:
        for name in ("ca", "cert", "key"):
            path = getattr(tls, name, None)
            if path is not None and not Path(path).is_file():
                problems.append((f"mysql.ssl.{name}", f"no such file: {path}"))
    for i, directory in enumerate(settings.runners.plugin_dirs):
        if not directory.is_dir():
            problems.append((f"runners.plugin_dirs[{i}]", f"no such directory: {directory}"))
    # Faust's state (RocksDB) is made there at start, and written while the worker runs
    if (why := _uncreatable(settings.streams.state_dir)) is not None:
        problems.append(("streams.state_dir", why))
    return problems


def _uncreatable(directory: Path) -> str | None:
    """Why `directory` cannot be used or made by this user, or None."""
    existing = Path(directory).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable by this user"
    return None


def topic_problems(config: Config, plugins: Iterable[str]) -> Problems:
    """Topic names the broker would refuse when a component creates its topics at start."""
    topics = config.settings.topics
    named = {f"topics.{key}": getattr(topics, key) for key in ("triggers", "results", "dlq", "cdc_checkpoints")}
    for rule in (r for r in config.rules.rules if r.enabled):  # a disabled rule's topic is not created
        named[f"{rule_where(rule.table, rule.name)} (its topic)"] = topics.row_changes(rule.db, rule.table)
    for plugin in sorted({*plugins, *config.rules.plugins()}):
        named[f"plugin {plugin} (its topics)"] = topics.invoke(plugin, "high")  # the longer of its two
    return [(where, why) for where, name in named.items() if (why := topic_name_problem(name)) is not None]
