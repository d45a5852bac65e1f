"""``flash login``: store a Runpod API key where runpod-flash, the ``runpod`` SDK and
``runpodctl`` look for it (:mod:`flash_runtime.protocol.credentials`)."""

from __future__ import annotations

import sys

import click

from .._terminal import handles_errors, new_console
from ..protocol.credentials import credentials_file, save_api_key

CONSOLE_KEYS_URL = "https://www.runpod.io/console/user/settings"


@click.command("login")
@click.option(
    "--api-key",
    "api_key",
    metavar="KEY",
    help="The key to store (default: asked for, hidden; or one line on standard input).",
)
@click.option(
    "--no-open",
    is_flag=True,
    help="Accepted for runpod-flash's scripts; no browser is opened in any case.",
)
@handles_errors
def login_command(api_key: str | None, no_open: bool) -> None:
    """Store a Runpod API key for flash (in ~/.runpod/config.toml, private to you).

    Later commands use it when RUNPOD_API_KEY is not set (in the environment or the project's
    .env), and then default to --platform runpod. Create a key at
    https://www.runpod.io/console/user/settings.
    """
    del no_open  # runpod-flash opens a browser for Runpod's console; this asks for the key
    if api_key is None:
        if sys.stdin.isatty():
            new_console(stderr=True).print(f"Create an API key at {CONSOLE_KEYS_URL}")
            api_key = click.prompt("Runpod API key", hide_input=True, err=True)
        else:
            api_key = sys.stdin.readline()
    path = save_api_key(api_key or "", credentials_file())
    from rich.markup import escape

    new_console().print(
        f"[green]✓[/green] Logged in. The key is stored in {escape(str(path))}", soft_wrap=True
    )
