"""`cdcflow schemas ...`"""

from __future__ import annotations

from pathlib import Path

import click

from schemas.export import export_schemas


@click.group("schemas")
def schemas_group() -> None:
    """The event and config contracts."""


@schemas_group.command("export")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
def export(directory: Path) -> None:
    """Write the JSON Schema of every contract into DIRECTORY."""
    for path in export_schemas(directory):
        click.echo(path)
