"""``flash run``: the development server (see :mod:`flash_runtime.devserver.session`)."""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path

import click

from .._terminal import fail
from ..errors import FlashError
from ..pack.cli import exclude_option
from ..protocol.target import PLATFORMS
from .session import DEFAULT_HOST, DEFAULT_PORT


@click.command("run")
@click.option(
    "--host",
    envvar="FLASH_HOST",
    default=DEFAULT_HOST,
    show_default=True,
    help="Address to listen on. The server asks for no key: keep it on loopback.",
)
@click.option(
    "--port",
    "-p",
    envvar="FLASH_PORT",
    type=click.IntRange(0, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    help="Port to listen on, also FLASH_PORT (if the default is busy, the next free one is used).",
)
@click.option(
    "--platform",
    type=click.Choice(PLATFORMS),
    default="local",
    show_default=True,
    help="Where the live endpoints run: the local platform, or Runpod (needs RUNPOD_API_KEY).",
)
@click.option(
    "--app",
    "-a",
    "app_name",
    help="The app (default: the project directory's name, as `flash deploy` names it).",
)
@exclude_option
@click.option(
    "--reload/--no-reload",
    default=True,
    show_default=True,
    help="Rebuild and roll the live endpoints when project files change.",
)
@click.option(
    "--auto-provision",
    is_flag=True,
    help="runpod-flash's switch to provision every endpoint at start; here they always are.",
)
@click.option(
    "--once",
    is_flag=True,
    help="With MODULE: deploy, run the entrypoint once, delete the live endpoints and exit.",
)
@click.argument(
    "module", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.pass_context
def run_command(
    ctx: click.Context,
    host: str,
    port: int,
    platform: str,
    app_name: str | None,
    exclude: tuple[str, ...],
    reload: bool,
    auto_provision: bool,
    once: bool,
    module: Path | None,
) -> None:
    """Serve the project's endpoints on localhost while you edit it.

    `flash dev` is the same command (runpod-flash's name for it). Builds the project and deploys it to the app's `live` environment, its endpoints named
    live-NAME, then serves every endpoint at http://HOST:PORT/NAME/...: queue-based ones at
    /NAME/run, /NAME/runsync and /NAME/status/ID, load-balanced ones at their routes under
    /NAME. GET / lists them; /docs is the interactive API documentation. Saving a project file
    rebuilds and rolls the live endpoints onto the new code; a broken build is reported and the
    last good one keeps serving. Workers' output streams here. Ctrl-C stops the server and
    deletes the live endpoints (other environments are not touched).
    """
    from rich.console import Console

    from ..pack.project import find_root

    del auto_provision  # every endpoint is deployed to the live environment at start anyway
    if module is not None:  # a Runpod SDK 2.0 project: its local entrypoint (apps2.py)
        _sdk2_dev(module, platform=platform, once=once, reload=reload)
        return
    if once:
        fail(FlashError("--once goes with MODULE (a Runpod SDK 2.0 app's file)"))
    from .session import DevOptions, DevServer

    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)  # lines show up at once, even in a pipe
    console = Console(highlight=False)
    source = ctx.get_parameter_source("port")
    options = DevOptions(
        project=find_root(),
        host=host,
        port=port,
        port_explicit=source is not None and source.name != "DEFAULT",
        platform=platform,
        app_name=app_name,
        exclude=exclude,
        reload=reload,
    )
    try:
        code = asyncio.run(DevServer(options, console).run())
    except FlashError as err:
        fail(err)
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit(130)
    sys.exit(code)


def _sdk2_dev(module: Path, *, platform: str, once: bool, reload: bool) -> None:
    from ..platform.process import ensure_running
    from ..protocol.local import PlatformConfig
    from .apps2 import Sdk2Dev

    if platform != "local":
        fail(
            FlashError(
                "a Runpod SDK 2.0 project runs against Runpod with the SDK's own `rp flash dev`; "
                "`flash dev MODULE` is for the local platform"
            )
        )
    try:
        config = PlatformConfig.load()
        ensure_running(config)
        session = Sdk2Dev(module, config, lambda line: click.echo(f"flash dev: {line}", err=True))
        code = session.run(once=once, reload=reload)
    except FlashError as err:
        fail(err)
    except KeyboardInterrupt:
        sys.exit(130)
    sys.exit(code)
