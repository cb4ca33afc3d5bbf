"""`cdcflow runners|plugins|runs|dlq ...`: the plugins part's commands.

The Redis and Kafka clients (redis, plugins.store, plugins.state, plugins.dlq, plugins.runner) are
imported by the commands that use them, when they run: `--help`, `plugins new|test|watch` and the
other parts' commands do not pay for them. Where a command has logic of its own, it is a plain
function the HTTP API calls too (plugins/listing.py plugin_listing, plugins/dlq.py dead_letters and
dead_letters_to_replay, try_plugin here) and the command prints.
"""

from __future__ import annotations

import getpass
import json
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import click

from plugins.execution import execute
from plugins.listing import labelled_plugins, plugin_listing
from plugins.pool import WorkerPool, WorkerSpec
from plugins.registry import NotFoundError, code_hash, find_plugin, load_plugin, worker_target
from plugins.scaffold import ScaffoldError, scaffold_plugin
from plugins.since import parse_since
from plugins.venvs import VenvError, ensure_venv, venv_python
from plugins.watcher import FolderWatcher
from schemas.errors import ConfigError
from schemas.invocation import Invocation, ManualTrigger, utcnow
from schemas.manifest import ParamError
from schemas.result import IN_PROGRESS, Result, RunStatus
from schemas.runtime.cli_support import get_config, parse_param_pairs
from schemas.runtime.text_table import text_table
from schemas.settings import Settings

if TYPE_CHECKING:  # imported when a command runs (see above)
    from plugins.store import RunStore


def _settings() -> Settings:
    return get_config(click.get_current_context()).settings


def _table(rows: list[list[str]], headers: list[str]) -> str:
    return "\n".join(text_table(headers, rows))


# -- runners -----------------------------------------------------------------------------------
@click.group()
def runners() -> None:
    """Plugin runners: consume invocations and run plugins in isolated warm workers."""


@runners.command("run")
@click.option("--plugin", "plugin_names", multiple=True, help="run only these plugins (repeatable); default: all")
@click.option("--shutdown-grace", default=10.0, show_default=True, help="seconds running calls may finish on stop")
@click.option(
    "--watch/--no-watch",
    default=True,
    show_default=True,
    help="hot reload: serve changed, fixed and new plugin folders without a restart",
)
def runners_run(plugin_names: tuple[str, ...], shutdown_grace: float, watch: bool) -> None:
    """Run a runner in the foreground until SIGTERM/Ctrl-C."""
    from plugins.runner import run_runner  # lazy: Kafka and Redis clients

    code = run_runner(
        get_config(click.get_current_context()),
        plugins=plugin_names or None,
        shutdown_grace=shutdown_grace,
        watch=watch,
    )
    sys.exit(code)


# -- plugins ---------------------------------------------------------------------------------
@click.group("plugins")
def plugins_group() -> None:
    """Installed plugins: list them, try one out."""


@plugins_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def plugins_list(as_json: bool) -> None:
    """Every plugin: on disk (version, code hash, dependencies, venv) and as served (loaded at, state, last error)."""
    settings = _settings()
    items, errors = plugin_listing(settings, _served_states())
    if as_json:
        click.echo(json.dumps({"plugins": items, "errors": errors}, indent=2))
    else:
        if items:
            click.echo(_table([_plugin_row(i) for i in items], PLUGIN_COLUMNS))
        else:
            click.echo("no plugins found in " + ", ".join(map(str, settings.runners.plugin_dirs)))
        for error in errors:
            click.secho(f"error: {error['error']}", fg="red", err=True)
    if errors:
        sys.exit(1)


PLUGIN_COLUMNS = [
    "NAME",
    "VERSION",
    "CATEGORY",
    "TAGS",
    "CODE",
    "DEPENDENCIES",
    "VENV",
    "SERVING",
    "LOADED AT",
    "STATE",
    "LAST ERROR",
]


def _plugin_row(item: dict[str, Any]) -> list[str]:
    return [
        item["name"],
        item["version"],
        item["category"] or "-",
        ", ".join(item["tags"]) or "-",
        item["code_hash"][:12],
        ", ".join(item["dependencies"]) or "-",
        item["venv_state"],
        _served(item),
        _when(item["loaded_at"]),
        item["state"],
        (item["last_error"] or "").splitlines()[0][:60] if item["last_error"] else "",
    ]


def _served_states() -> dict[str, dict[str, Any]]:
    import redis  # lazy: Redis client

    from plugins.state import PluginStates  # lazy: Redis client

    try:
        store = _store()
        try:
            return PluginStates(store.client, store.prefix).all()
        finally:
            store.close()
    except redis.RedisError as e:
        click.secho(f"warning: cannot read the served state from Redis: {e}", fg="yellow", err=True)
        return {}


def _served(item: dict[str, Any]) -> str:
    if not item["served_code_hash"]:
        return "-"
    same = item["served_code_hash"] == item["code_hash"]
    return f"{item['served_version']} {item['served_code_hash'][:12]}" + ("" if same else " (disk differs)")


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


@plugins_group.command("reload")
@click.argument("name")
def plugins_reload(name: str) -> None:
    """Ask every running runner to reload NAME now (new workers on the current code; old ones drain)."""
    import redis  # lazy: Redis client

    from plugins.state import PluginStates  # lazy: Redis client

    try:
        find_plugin(_settings().runners.plugin_dirs, name)  # a typo is named, not sent to every runner
    except NotFoundError as e:
        raise click.ClickException(str(e)) from None
    try:
        store = _store()
        PluginStates(store.client, store.prefix).request_reload(name)
        store.close()
    except redis.RedisError as e:
        raise click.ClickException(f"cannot reach Redis: {e}") from None
    click.echo(
        f"reload of {name} requested; runners pick it up within about a second "
        f"(see `cdcflow plugins list` for the result)"
    )


@plugins_group.command("watch")
@click.option(
    "--interval", type=click.FloatRange(min=0.05), default=1.0, show_default=True, help="seconds between polls"
)
def plugins_watch(interval: float) -> None:
    """Watch the plugin folders and report each settled change: the new version and hash, or why it is broken.

    Runners reload by themselves; this shows what they will see, e.g. while editing a plugin.
    """
    settings = _settings()
    watcher = FolderWatcher(settings.runners.plugin_dirs)
    hashes = {f: code_hash(f) for f in watcher.known()}  # a touch without a content change is no change
    click.echo(
        f"watching {len(watcher.known())} plugin folder(s) in {', '.join(map(str, settings.runners.plugin_dirs))}"
        " (Ctrl-C to stop)"
    )
    try:
        while True:
            time.sleep(interval)
            changed, removed = watcher.poll()
            stamp = time.strftime("%H:%M:%S")
            for folder in removed:
                click.echo(f"{stamp} removed  {folder}")
            for folder in changed:
                try:
                    p = load_plugin(folder)
                except (ConfigError, OSError) as e:
                    click.secho(f"{stamp} broken   {folder}: {e}", fg="red")
                else:
                    if hashes.get(folder) == p.code_hash:
                        continue
                    what = "changed" if folder in hashes else "new    "
                    hashes[folder] = p.code_hash
                    click.echo(f"{stamp} {what}  {p.name} {p.version} code {p.code_hash[:12]} ({folder})")
    except KeyboardInterrupt:
        pass


@plugins_group.command("new")
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="where to create it; default: the first of runners.plugin_dirs",
)
def plugins_new(name: str, directory: Path | None) -> None:
    """Scaffold a plugin folder NAME (plugin.json, main.py with the entry function and hooks, README.md)."""
    if directory is None:
        dirs = _settings().runners.plugin_dirs
        if not dirs:
            raise click.UsageError("no runners.plugin_dirs configured; pass --dir")
        directory = Path(dirs[0])
    try:
        folder = scaffold_plugin(name, directory)
    except ScaffoldError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"created {folder} (plugin.json, main.py, README.md)")
    click.echo(f"try it: cdcflow plugins test {name} -p message=hello")


@plugins_group.command("test")
@click.argument("name")
@click.option("-p", "--param", "pairs", multiple=True, metavar="KEY=VALUE", help="a parameter (repeatable)")
@click.option("--json", "json_params", metavar="PARAMS", help="parameters as a JSON object (-p wins on conflicts)")
def plugins_test(name: str, pairs: tuple[str, ...], json_params: str | None) -> None:
    """Run one invocation of NAME in its own venv and worker, and print the Result JSON.

    Needs neither Kafka nor Redis: nothing is recorded.
    """
    settings = _settings()
    params = parse_param_pairs(pairs, json_params)
    try:
        result = try_plugin(settings, name, params)
    except (NotFoundError, ParamError) as e:
        raise click.ClickException(str(e)) from None
    except VenvError as e:
        raise click.ClickException(f"cannot build the venv of {name}:\n{e}") from None
    click.echo(json.dumps(result.model_dump(mode="json"), indent=2))
    sys.exit(0 if result.status == "success" else 1)


def try_plugin(settings: Settings, name: str, params: dict[str, Any]) -> Result:
    """One manual invocation of plugin `name` in its venv (built if missing) and a one-worker pool.

    Nothing is recorded. NotFoundError if there is no such plugin, ParamError if the manifest refuses
    `params`, VenvError if its venv cannot be built.
    """
    plugin = find_plugin(settings.runners.plugin_dirs, name)
    params = plugin.manifest.validate_params(params)  # ParamError before a venv is built or a worker started
    venv = ensure_venv(settings.runners.venv_dir, plugin.manifest.dependencies)
    pool = WorkerPool(
        WorkerSpec(
            plugin.name,
            venv_python(venv),
            plugin.path,
            worker_target(plugin.manifest),
            memory_limit_mb=plugin.manifest.memory_limit_mb,
        ),
        1,
    )
    pool.start()  # an import error is not raised here: the call below reports it as a failed Result
    try:
        now = utcnow()
        invocation = Invocation(
            invocation_id=str(uuid.uuid4()),
            plugin=name,
            params=params,
            created_at=now,
            trigger=ManualTrigger(requested_by=getpass.getuser(), requested_at=now, request_id=str(uuid.uuid4())),
        )
        result = execute(plugin, pool, invocation)
    finally:
        pool.close()
    assert result is not None  # None only for a call aborted by closing the pool, which happens after it
    return result


# -- runs ------------------------------------------------------------------------------------
@click.group()
def runs() -> None:
    """Run history (from Redis)."""


def _store() -> RunStore:
    from plugins.store import RunStore  # lazy: Redis client

    return RunStore(_settings())


@runs.command("list")
@click.option("--plugin", help="only this plugin's runs")
@click.option(
    "--status",
    type=click.Choice(list(get_args(RunStatus))),
    help="pending and running: runs in progress (since when the state began; with host and worker pid)",
)
@click.option(
    "--since",
    "since",
    metavar="WHEN",
    help="only runs finished since WHEN: ISO time (UTC unless it "
    "has an offset) or a duration ago like 90s, 30m, 2h, 1d, 1h30m",
)
@click.option("--until", "until", metavar="WHEN", help="only runs finished until WHEN (as --since)")
@click.option("--trigger-kind", type=click.Choice(["cdc", "schedule", "manual", "replay", "retry"]))
@click.option("--rule", help="only runs of invocations this rule made")
@click.option("--schedule", help="only runs of this schedule's fires")
@click.option("--category", help="only runs of plugins in this category (plugin.json)")
@click.option(
    "--tag", "tags", multiple=True, help="only runs of plugins with this tag (plugin.json; repeatable: any of them)"
)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10000))
@click.option("--json", "as_json", is_flag=True, help="one Result JSON per line")
def runs_list(
    plugin: str | None,
    status: str | None,
    since: str | None,
    until: str | None,
    trigger_kind: str | None,
    rule: str | None,
    schedule: str | None,
    category: str | None,
    tags: tuple[str, ...],
    limit: int,
    as_json: bool,
) -> None:
    """Most recent runs first (the same query as GET /api/runs)."""
    import redis  # lazy: Redis client

    from plugins.run_query import RunFilter, query_runs  # lazy: Redis client

    bounds = [_when_option(since, "--since"), _when_option(until, "--until")]
    if bounds[0] is not None and bounds[1] is not None and bounds[0] > bounds[1]:
        raise click.BadParameter("is after --until", param_hint="--since")
    labelled = labelled_plugins(_settings(), category, tags)
    where = RunFilter(plugin, status, trigger_kind, rule, schedule, bounds[0], bounds[1], plugins=labelled)
    try:
        results = query_runs(_store(), where, limit).runs
    except redis.RedisError as e:
        raise click.ClickException(f"cannot read run history from Redis: {e}") from None
    if as_json:
        for r in results:
            click.echo(r.model_dump_json())
        return
    if not results:
        click.echo("no runs")
        return
    click.echo(_table([_run_row(r) for r in results], ["AT", "PLUGIN", "STATUS", "MS", "INVOCATION", "ERROR / WHERE"]))


def _when_option(text: str | None, option: str) -> float | None:
    try:
        return parse_since(text).timestamp() if text else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint=option) from None


def _run_row(r: Result) -> list[str]:
    """A finished run at its finish time; one in progress at the time its state began, and where it runs."""
    error = f"{r.error.type}: {r.error.message.splitlines()[0] if r.error.message else ''}" if r.error else ""
    if r.status in IN_PROGRESS:
        extra = r.model_extra or {}
        pid = extra.get("worker_pid")
        error = f"{extra.get('host') or '?'}" + (f" pid {pid}" if pid else "")
    return [
        r.finished_at.strftime("%Y-%m-%d %H:%M:%S"),
        r.plugin,
        r.status,
        "-" if r.status in IN_PROGRESS else f"{r.duration_ms:.1f}",
        r.invocation_id,
        error[:80],
    ]


@runs.command("show")
@click.argument("invocation_id")
def runs_show(invocation_id: str) -> None:
    """The full Result of one run; while it is pending or running, its state (host, worker pid)."""
    import redis  # lazy: Redis client

    try:
        store = _store()
        result = store.current(invocation_id)
        marked = result is None and store.client.exists(store.cancel_key(invocation_id))
    except redis.RedisError as e:
        raise click.ClickException(f"cannot read run history from Redis: {e}") from None
    if marked:
        click.echo(
            f"{invocation_id}: cancel requested; no runner has reported it yet (recorded cancelled when one does)"
        )
        return
    if result is None:
        raise click.ClickException(f"no run {invocation_id!r} (unknown, not received by a runner yet, or expired)")
    click.echo(json.dumps(result.model_dump(mode="json"), indent=2))


@runs.command("cancel")
@click.argument("invocation_id")
def runs_cancel(invocation_id: str) -> None:
    """Cancel a pending, delayed or running invocation: it never runs, or its worker process is stopped;
    either way its result is `cancelled` (the same as POST /api/runs/ID/cancel)."""
    import redis  # lazy: Redis client

    from plugins.cancel import CancelError, cancel  # lazy: Redis client

    try:
        outcome = cancel(_settings(), invocation_id, f"cli:{getpass.getuser()}")
    except CancelError as e:
        raise click.ClickException(str(e)) from None
    except redis.RedisError as e:
        raise click.ClickException(f"cannot reach Redis to cancel: {e}") from None
    if outcome.was is None:
        click.echo(
            f"{invocation_id}: cancel requested; no runner has reported it yet: it will not run (or is stopped, "
            "if a runner took it in the last half second), and is recorded cancelled"
        )
    elif outcome.was == "running":
        click.echo(f"{invocation_id}: cancelled while running; its worker is being stopped")
    else:
        click.echo(f"{invocation_id}: cancelled while {outcome.was}; it will not run")


# -- dlq -------------------------------------------------------------------------------------
@click.group()
def dlq() -> None:
    """Dead letters: invocations that failed after all retries."""


@dlq.command("list")
@click.option("--plugin", help="only this plugin's dead letters")
@click.option("--json", "as_json", is_flag=True, help="one entry JSON per line")
def dlq_list(plugin: str | None, as_json: bool) -> None:
    """Dead letters on the DLQ topic, oldest first, and whether each was replayed."""
    import redis  # lazy: Redis client

    from plugins.dlq import dead_letters  # lazy: Kafka and Redis clients

    try:
        entries, done = dead_letters(_settings(), plugin)
    except redis.RedisError as e:
        raise click.ClickException(f"cannot read replay marks from Redis: {e}") from None
    if as_json:
        for entry in entries:
            click.echo(json.dumps({**entry, "replayed": done.get(entry["dlq_id"])}))
        return
    if not entries:
        click.echo("no dead letters")
        return
    rows = [_dead_letter_row(entry, done) for entry in entries]
    click.echo(_table(rows, ["DEAD AT", "PLUGIN", "ID", "ATTEMPTS", "STATUS", "REPLAYED AS", "ERROR"]))


def _dead_letter_row(entry: dict[str, Any], done: dict[str, dict[str, Any]]) -> list[str]:
    # Anyone can write to the DLQ topic: fields other than the id, plugin and invocation are shown as
    # they come, whatever their type.
    error = entry.get("error")
    err: dict[str, Any] = error if isinstance(error, dict) else {}
    message = (str(err.get("message")).splitlines() or [""])[0] if err.get("message") else ""
    attempts = entry.get("attempts")
    return [
        str(entry.get("dead_at") or "")[:19],
        entry["plugin"],
        entry["dlq_id"],
        str(len(attempts)) if isinstance(attempts, list) else "?",
        str(entry.get("status") or ""),
        (done[entry["dlq_id"]]["replay_id"] if entry["dlq_id"] in done else "-"),
        f"{err.get('type', '')}: {message}"[:80],
    ]


@dlq.command("replay")
@click.argument("ids", nargs=-1)
@click.option("--plugin", help="replay every not yet replayed dead letter of this plugin")
def dlq_replay(ids: tuple[str, ...], plugin: str | None) -> None:
    """Publish dead letters again to their plugin's topic (new invocation id, trigger kind `replay`).

    An entry already replayed is skipped, so running the same command twice replays nothing twice.
    """
    from plugins.dlq import dead_letters_to_replay, replay  # lazy: Kafka and Redis clients

    if not ids and not plugin:
        raise click.UsageError("name dead-letter IDs or --plugin NAME")
    settings = _settings()
    try:
        entries = dead_letters_to_replay(settings, ids, plugin)
    except NotFoundError as e:
        raise click.ClickException(str(e)) from None
    if not entries:
        click.echo("nothing to replay")
        return
    for entry, inv in replay(settings, entries):
        if inv is None:
            click.echo(f"{entry['dlq_id']}  already replayed, skipped")
        else:
            topic = settings.topics.invoke(inv.plugin, inv.priority)
            click.echo(f"{entry['dlq_id']}  replayed as {inv.invocation_id} to {topic}")
