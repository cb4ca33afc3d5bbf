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
    try:
        written = export_schemas(directory)
    except OSError as e:
        where = e.filename or directory
        raise click.ClickException(f"{where}: cannot write the schemas there: {e.strerror or e}") from None
    for path in written:
        click.echo(path)
