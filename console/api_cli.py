"""`cdcflow api ...`: serve the HTTP API and dashboard, manage its tokens, read its audit log."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import click

from schemas.runtime.cli_support import get_config
from schemas.runtime.text_table import text_table

SCOPE_CHOICE = click.Choice(["read", "trigger", "admin"])


@click.group("api")
def api() -> None:
    """The HTTP API and dashboard: serve it, manage its tokens, read its audit log."""


@api.command("serve")
@click.option("--host", help="address to listen on (default: api.bind, 127.0.0.1)")
@click.option("--port", type=click.IntRange(0, 65535), help="port (default: api.port, 8080)")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the API (and dashboard) until Ctrl-C."""
    from console.api.server import serve_forever

    config = get_config(ctx)
    serve_forever(config, host or config.settings.api.bind, config.settings.api.port if port is None else port)


@api.group("token")
def token() -> None:
    """API tokens: create (shown once), list, revoke."""


def _store(ctx: click.Context):  # type: ignore[no-untyped-def]  # TokenStore; imported lazily with redis
    from console.api.tokens import TokenStore
    from schemas.runtime.components import redis_client

    settings = get_config(ctx).settings
    return TokenStore(redis_client(settings, timeout=5.0), settings.redis.key_prefix, settings.api)


@token.command("create")
@click.argument("name")
@click.option("--scope", "scopes", multiple=True, type=SCOPE_CHOICE, required=True, help="read, trigger, admin")
@click.pass_context
def token_create(ctx: click.Context, name: str, scopes: tuple[str, ...]) -> None:
    """Make a token; it is printed once (only its hash is stored): keep it."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9_.@-]{1,64}", name):
        raise click.BadParameter("letters, digits and _.@- only, at most 64", param_hint="NAME")
    text, record = _store(ctx).create(name, list(dict.fromkeys(scopes)))
    click.echo(f"token {record.id} ({name}, scopes {', '.join(record.scopes)}); shown this once:", err=True)
    click.echo(text)


@token.command("list")
@click.pass_context
def token_list(ctx: click.Context) -> None:
    """Every token: id, name, scopes, when made, whether revoked (never the token itself)."""
    rows = [
        (
            r.id,
            r.name,
            ",".join(r.scopes),
            _when(r.created_at) if r.source == "redis" else "config file",
            _when(r.revoked_at) if r.revoked_at else "-",
        )
        for r in _store(ctx).list()
    ]
    if not rows:
        click.echo("no tokens (make one with `cdcflow api token create NAME --scope read`)")
        return
    click.echo("\n".join(text_table(("ID", "NAME", "SCOPES", "CREATED", "REVOKED"), rows)))


@token.command("revoke")
@click.argument("token_id")
@click.pass_context
def token_revoke(ctx: click.Context, token_id: str) -> None:
    """Revoke a token by its id (see `token list`): refused from the next request on."""
    record = _store(ctx).revoke(token_id)
    if record is None:
        raise click.ClickException(f"no token with id {token_id!r} (config-file tokens are removed from the file)")
    click.echo(f"revoked {record.id} ({record.name})")


@token.command("hash")
def token_hash_command() -> None:
    """Read a token on stdin, print its sha256 for `api.tokens` in the config file."""
    from console.api.tokens import token_hash

    click.echo(token_hash(click.get_text_stream("stdin").read().strip()))


@api.command("audit")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.pass_context
def audit(ctx: click.Context, limit: int) -> None:
    """The API's audit log, newest first: who did what, when, with which result."""
    from console.api.audit import AuditLog
    from schemas.runtime.components import redis_client

    settings = get_config(ctx).settings
    entries = AuditLog(redis_client(settings, timeout=5.0), settings.redis.key_prefix).page(limit)
    rows = [(_when(e.at), e.token, e.action, e.target, str(e.status), e.detail) for e in entries]
    click.echo("\n".join(text_table(("AT", "WHO", "ACTION", "TARGET", "STATUS", "DETAIL"), rows)) if rows else "empty")


def _when(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch or time.time(), UTC).strftime("%Y-%m-%d %H:%M:%S")
