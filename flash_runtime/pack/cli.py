"""The packer's commands: ``flash build`` and ``flash init`` (and ``python -m flash_runtime.pack``).

Both are plain ``click.Command`` objects that the ``flash`` group mounts. Expected failures
(FlashError) print their message in red without a traceback and exit with code 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from .._terminal import fail, handles_errors, new_console
from ..errors import FlashError

F = TypeVar("F", bound=Callable[..., Any])


# The build options `flash deploy` and `flash run` share with `flash build`.
exclude_option = click.option(
    "--exclude",
    multiple=True,
    metavar="PKG[,PKG...]",
    help="Packages not to bundle (the worker image provides them); comma-separated, repeatable.",
)
no_deps_option = click.option(
    "--no-deps", is_flag=True, help="Install the listed requirements without their dependencies."
)
image_repository_option = click.option(
    "--image-repository",
    metavar="REPO",
    help="Run on flash_runtime's own images published under REPO (e.g. ghcr.io/me; default: "
    "FLASH_IMAGE_REPOSITORY). Without one, the artifact is for Runpod's runpod/flash* images "
    "and carries the worker core.",
)
python_version_option = click.option(
    "--python-version",
    metavar="X.Y",
    help="Python version of the worker image (3.11-3.13); default: this interpreter's.",
)
output_option = click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the artifact (default: .flash/artifact.tar.gz).",
)


@click.command("build")
@click.argument("project_dir", required=False, type=click.Path(file_okay=False, path_type=Path))
@exclude_option
@no_deps_option
@image_repository_option
@click.option(
    "--skip-deps", is_flag=True, help="Install no dependencies at all (code-only artifact)."
)
@python_version_option
@output_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON on stdout.")
@handles_errors
def build_command(
    project_dir: Path | None,
    exclude: tuple[str, ...],
    no_deps: bool,
    image_repository: str | None,
    skip_deps: bool,
    python_version: str | None,
    output: Path | None,
    as_json: bool,
) -> None:
    """Package the project into .flash/artifact.tar.gz and write its manifest.

    Finds every @Endpoint, installs requirements.txt and the endpoints' dependencies for Linux
    x86_64 (cached), and writes a deterministic tarball. PROJECT_DIR defaults to the project the
    working directory belongs to (it, or the nearest directory above it holding a build's
    .flash/flash_manifest.json or a .flashignore).
    """
    from .builder import build
    from .project import find_root

    result = build(
        project_dir or find_root(),
        output=output,
        exclude=exclude,
        no_deps=no_deps,
        skip_deps=skip_deps,
        python_version=python_version,
        image_repository=image_repository,
        console=None if as_json else new_console(),
    )
    if as_json:
        click.echo(json.dumps(result.summary(), indent=2))


@click.command("init")
@click.argument("name", required=False, type=click.Path(path_type=Path))
@click.option("--force", "-f", is_flag=True, help="Write into an existing, non-empty directory.")
@click.pass_context
def init_command(ctx: click.Context, name: Path | None, force: bool) -> None:
    """Create a new Flash project NAME from the template (use . for the current directory)."""
    from rich.markup import escape

    if name is None:  # as runpod-flash: no NAME shows how to call it
        click.echo(ctx.get_help())
        return
    from .scaffold import TEMPLATE_FILES, init_project

    try:
        target = init_project(name, force=force)
    except FlashError as err:
        fail(err)
    console = new_console()
    console.print(f"[green]✓[/green] Created {escape(target.name)} in {escape(str(target))}")
    for file in TEMPLATE_FILES:
        console.print(f"  {escape(file)}")
    shown = "." if target == Path.cwd().resolve() else str(name)
    console.print("\nNext:")
    if shown != ".":
        console.print(f"  cd {escape(shown)}")
    console.print("  flash build     [dim]# package it into .flash/artifact.tar.gz[/dim]")
    console.print("  flash deploy    [dim]# build, upload and start the endpoints[/dim]")
