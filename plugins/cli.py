"""`cdcflow runners|plugins|runs|dlq ...`: the plugins part's commands."""

from __future__ import annotations

import getpass
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import click

from schemas.invocation import Invocation, ManualTrigger, utcnow
from schemas.result import Result
from schemas.runtime.cli_support import get_config, parse_param_pairs
from schemas.runtime.text_table import text_table


def _settings():
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
    from plugins.runner import run_runner

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
    from plugins.registry import discover
    from plugins.venvs import venv_path, venv_spec, venv_state

    settings = _settings()
    found = discover(settings.runners.plugin_dirs)
    served = _served_states()
    items: list[dict[str, Any]] = []
    for p in found.plugins.values():
        spec = venv_spec(p.manifest.dependencies)
        live = served.get(p.name) or {}
        items.append(
            {
                "name": p.name,
                "version": p.version,
                "code_hash": p.code_hash,
                "path": str(p.path),
                "entry_point": p.manifest.entry_point,
                "dependencies": p.manifest.dependencies,
                "concurrency": p.manifest.concurrency,
                "timeout_seconds": p.manifest.timeout_seconds,
                "venv": str(venv_path(settings.runners.venv_dir, spec)),
                "venv_state": venv_state(settings.runners.venv_dir, spec),
                # As a runner serves it (from Redis); may lag the disk while a reload is under way.
                "served_version": live.get("version"),
                "served_code_hash": live.get("code_hash"),
                "loaded_at": live.get("loaded_at"),
                "state": live.get("state", "not served"),
                "last_error": live.get("last_error"),
                "runner": live.get("runner"),
            }
        )
    errors = [{"path": str(pr.path), "error": pr.message} for pr in found.problems]
    if as_json:
        click.echo(json.dumps({"plugins": items, "errors": errors}, indent=2))
    else:
        if items:
            click.echo(
                _table(
                    [
                        [
                            i["name"],
                            i["version"],
                            i["code_hash"][:12],
                            ", ".join(i["dependencies"]) or "-",
                            i["venv_state"],
                            _served(i),
                            _when(i["loaded_at"]),
                            i["state"],
                            (i["last_error"] or "").splitlines()[0][:60] if i["last_error"] else "",
                        ]
                        for i in items
                    ],
                    ["NAME", "VERSION", "CODE", "DEPENDENCIES", "VENV", "SERVING", "LOADED AT", "STATE", "LAST ERROR"],
                )
            )
        else:
            click.echo("no plugins found in " + ", ".join(map(str, settings.runners.plugin_dirs)))
        for e in errors:
            click.secho(f"error: {e['error']}", fg="red", err=True)
    if errors:
        sys.exit(1)


def _served_states() -> dict[str, dict[str, Any]]:
    import redis

    from plugins.state import PluginStates

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
    from datetime import datetime

    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


@plugins_group.command("reload")
@click.argument("name")
def plugins_reload(name: str) -> None:
    """Ask every running runner to reload NAME now (new workers on the current code; old ones drain)."""
    import redis

    from plugins.state import PluginStates

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
@click.option("--interval", default=1.0, show_default=True, help="seconds between polls")
def plugins_watch(interval: float) -> None:
    """Watch the plugin folders and report each settled change: the new version and hash, or why it is broken.

    Runners reload by themselves; this shows what they will see, e.g. while editing a plugin.
    """
    import time

    from plugins.registry import code_hash, load_plugin
    from plugins.watcher import FolderWatcher
    from schemas.errors import ConfigError

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
    from plugins.scaffold import ScaffoldError, scaffold_plugin

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
    from plugins.execution import execute
    from plugins.pool import WorkerPool, WorkerSpec
    from plugins.registry import discover
    from plugins.venvs import VenvError, ensure_venv, venv_python

    settings = _settings()
    params = parse_param_pairs(pairs, json_params)
    found = discover(settings.runners.plugin_dirs)
    plugin = found.plugins.get(name)
    if plugin is None:
        related = [pr.message for pr in found.problems if pr.path.name == name or f"'{name}'" in pr.message]
        detail = ("\n" + "\n".join(related)) if related else f" (known: {', '.join(sorted(found.plugins)) or 'none'})"
        raise click.ClickException(f"plugin {name!r} not found{detail}")
    try:
        venv = ensure_venv(settings.runners.venv_dir, plugin.manifest.dependencies)
    except VenvError as e:
        raise click.ClickException(f"cannot build the venv of {name}:\n{e}") from None
    pool = WorkerPool(
        WorkerSpec(
            plugin.name,
            venv_python(venv),
            plugin.path,
            plugin.manifest.entry_point,
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
    assert result is not None
    click.echo(json.dumps(result.model_dump(mode="json"), indent=2))
    sys.exit(0 if result.status == "success" else 1)


# -- runs ------------------------------------------------------------------------------------
@click.group()
def runs() -> None:
    """Run history (from Redis)."""


def _store():
    from plugins.store import RunStore

    return RunStore(_settings())


@runs.command("list")
@click.option("--plugin", help="only this plugin's runs")
@click.option("--status", type=click.Choice(["success", "failed", "timeout", "rejected", "skipped"]))
@click.option(
    "--since",
    "since",
    metavar="WHEN",
    help="only runs finished since WHEN: ISO time (UTC unless it "
    "has an offset) or a duration ago like 90s, 30m, 2h, 1d, 1h30m",
)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10000))
@click.option("--json", "as_json", is_flag=True, help="one Result JSON per line")
def runs_list(plugin: str | None, status: str | None, since: str | None, limit: int, as_json: bool) -> None:
    """Most recent runs first."""
    import redis

    from plugins.since import parse_since

    try:
        since_ts = parse_since(since).timestamp() if since else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--since") from None
    try:
        results = _store().list(plugin=plugin, status=status, limit=limit, since=since_ts)
    except redis.RedisError as e:
        raise click.ClickException(f"cannot read run history from Redis: {e}") from None
    if as_json:
        for r in results:
            click.echo(r.model_dump_json())
        return
    if not results:
        click.echo("no runs")
        return
    click.echo(_table([_run_row(r) for r in results], ["FINISHED", "PLUGIN", "STATUS", "MS", "INVOCATION", "ERROR"]))


def _run_row(r: Result) -> list[str]:
    error = f"{r.error.type}: {r.error.message.splitlines()[0] if r.error.message else ''}" if r.error else ""
    return [
        r.finished_at.strftime("%Y-%m-%d %H:%M:%S"),
        r.plugin,
        r.status,
        f"{r.duration_ms:.1f}",
        r.invocation_id,
        error[:80],
    ]


@runs.command("show")
@click.argument("invocation_id")
def runs_show(invocation_id: str) -> None:
    """The full Result of one run."""
    import redis

    try:
        result = _store().get(invocation_id)
    except redis.RedisError as e:
        raise click.ClickException(f"cannot read run history from Redis: {e}") from None
    if result is None:
        raise click.ClickException(f"no run {invocation_id!r} (unknown, or expired after the result TTL)")
    click.echo(json.dumps(result.model_dump(mode="json"), indent=2))


# -- dlq -------------------------------------------------------------------------------------
@click.group()
def dlq() -> None:
    """Dead letters: invocations that failed after all retries."""


@dlq.command("list")
@click.option("--plugin", help="only this plugin's dead letters")
@click.option("--json", "as_json", is_flag=True, help="one entry JSON per line")
def dlq_list(plugin: str | None, as_json: bool) -> None:
    """Dead letters on the DLQ topic, oldest first, and whether each was replayed."""
    import redis

    from plugins.dlq import read_entries, replayed

    settings = _settings()
    entries = read_entries(settings, plugin)
    try:
        store = _store()
        done = replayed(store, [e["dlq_id"] for e in entries])
        store.close()
    except redis.RedisError as e:
        raise click.ClickException(f"cannot read replay marks from Redis: {e}") from None
    if as_json:
        for e in entries:
            click.echo(json.dumps({**e, "replayed": done.get(e["dlq_id"])}))
        return
    if not entries:
        click.echo("no dead letters")
        return
    rows = []
    for e in entries:
        err = e.get("error") or {}
        message = (err.get("message") or "").splitlines()[0] if err.get("message") else ""
        rows.append(
            [
                e.get("dead_at", "")[:19],
                e["plugin"],
                e["dlq_id"],
                str(len(e.get("attempts") or [])),
                e.get("status", ""),
                (done[e["dlq_id"]]["replay_id"] if e["dlq_id"] in done else "-"),
                f"{err.get('type', '')}: {message}"[:80],
            ]
        )
    click.echo(_table(rows, ["DEAD AT", "PLUGIN", "ID", "ATTEMPTS", "STATUS", "REPLAYED AS", "ERROR"]))


@dlq.command("replay")
@click.argument("ids", nargs=-1)
@click.option("--plugin", help="replay every not yet replayed dead letter of this plugin")
def dlq_replay(ids: tuple[str, ...], plugin: str | None) -> None:
    """Publish dead letters again to their plugin's topic (new invocation id, trigger kind `replay`).

    An entry already replayed is skipped, so running the same command twice replays nothing twice.
    """
    from plugins.dlq import read_entries, replay

    if not ids and not plugin:
        raise click.UsageError("name dead-letter IDs or --plugin NAME")
    settings = _settings()
    entries = read_entries(settings, plugin)
    if ids:
        by_id = {e["dlq_id"]: e for e in entries}
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise click.ClickException(
                f"no dead letter {', '.join(missing)}" + (f" of plugin {plugin}" if plugin else "")
            )
        entries = [by_id[i] for i in dict.fromkeys(ids)]
    if not entries:
        click.echo("nothing to replay")
        return
    for entry, inv in replay(settings, entries):
        if inv is None:
            click.echo(f"{entry['dlq_id']}  already replayed, skipped")
        else:
            click.echo(
                f"{entry['dlq_id']}  replayed as {inv.invocation_id} to {settings.topics.invoke(inv.plugin, inv.priority)}"
            )
