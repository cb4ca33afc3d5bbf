"""`cdcflow runners|plugins|runs|dlq ...`: the plugins part's commands."""
from __future__ import annotations

import getpass
import json
import sys
import uuid
from typing import Any

import click

from schemas.cli import get_config, parse_param_pairs
from schemas.invocation import Invocation, ManualTrigger, utcnow
from schemas.result import Result


def _settings():
    return get_config(click.get_current_context()).settings


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows)]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


# -- runners -----------------------------------------------------------------------------------
@click.group()
def runners() -> None:
    """Plugin runners: consume invocations and run plugins in isolated warm workers."""


@runners.command("run")
@click.option("--plugin", "plugin_names", multiple=True, help="run only these plugins (repeatable); default: all")
@click.option("--shutdown-grace", default=10.0, show_default=True, help="seconds running calls may finish on stop")
def runners_run(plugin_names: tuple[str, ...], shutdown_grace: float) -> None:
    """Run a runner in the foreground until SIGTERM/Ctrl-C."""
    from plugins.runner import run_runner

    code = run_runner(get_config(click.get_current_context()), plugins=plugin_names or None,
                      shutdown_grace=shutdown_grace)
    sys.exit(code)


# -- plugins ---------------------------------------------------------------------------------
@click.group("plugins")
def plugins_group() -> None:
    """Installed plugins: list them, try one out."""


@plugins_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
def plugins_list(as_json: bool) -> None:
    """Name, version, code hash, dependencies and venv state of every plugin, and what is broken."""
    from plugins.registry import discover
    from plugins.venvs import venv_path, venv_spec, venv_state

    settings = _settings()
    found = discover(settings.runners.plugin_dirs)
    items: list[dict[str, Any]] = []
    for p in found.plugins.values():
        spec = venv_spec(p.manifest.dependencies)
        items.append({
            "name": p.name, "version": p.version, "code_hash": p.code_hash, "path": str(p.path),
            "entry_point": p.manifest.entry_point, "dependencies": p.manifest.dependencies,
            "concurrency": p.manifest.concurrency, "timeout_seconds": p.manifest.timeout_seconds,
            "venv": str(venv_path(settings.runners.venv_dir, spec)),
            "venv_state": venv_state(settings.runners.venv_dir, spec),
        })
    errors = [{"path": str(pr.path), "error": pr.message} for pr in found.problems]
    if as_json:
        click.echo(json.dumps({"plugins": items, "errors": errors}, indent=2))
    else:
        if items:
            click.echo(_table([[i["name"], i["version"], i["code_hash"][:12], ", ".join(i["dependencies"]) or "-",
                                i["venv_state"]] for i in items],
                              ["NAME", "VERSION", "CODE", "DEPENDENCIES", "VENV"]))
        else:
            click.echo("no plugins found in " + ", ".join(map(str, settings.runners.plugin_dirs)))
        for e in errors:
            click.secho(f"error: {e['error']}", fg="red", err=True)
    if errors:
        sys.exit(1)


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
    pool = WorkerPool(WorkerSpec(plugin.name, venv_python(venv), plugin.path, plugin.manifest.entry_point), 1)
    pool.start()  # an import error is not raised here: the call below reports it as a failed Result
    try:
        now = utcnow()
        invocation = Invocation(
            invocation_id=str(uuid.uuid4()), plugin=name, params=params, created_at=now,
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
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10000))
@click.option("--json", "as_json", is_flag=True, help="one Result JSON per line")
def runs_list(plugin: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """Most recent runs first."""
    import redis

    try:
        results = _store().list(plugin=plugin, status=status, limit=limit)
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
    return [r.finished_at.strftime("%Y-%m-%d %H:%M:%S"), r.plugin, r.status, f"{r.duration_ms:.1f}",
            r.invocation_id, error[:80]]


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
def dlq_list() -> None:
    """List dead letters."""
    click.echo("no dead letters yet (retries and the DLQ come with a later version)")
