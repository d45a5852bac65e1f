"""``flash``: the command line. Commands are thin; each lives beside the code it drives and is
imported only when it runs, so ``flash --help`` stays fast."""

from __future__ import annotations

import importlib

import click

from . import __version__

# command name -> "module:attribute" of a click.Command
COMMANDS: dict[str, str] = {
    "build": "flash_runtime.pack.cli:build_command",
    "init": "flash_runtime.pack.cli:init_command",
    "deploy": "flash_runtime.deploy.cli:deploy_command",
    "undeploy": "flash_runtime.deploy.cli:undeploy_command",
    "app": "flash_runtime.deploy.cli:app_group",
    "env": "flash_runtime.deploy.cli:env_group",
    "logs": "flash_runtime.platform.cli:logs_command",
    "platform": "flash_runtime.platform.cli:platform_group",
    "run": "flash_runtime.devserver.cli:run_command",
    "dev": "flash_runtime.devserver.cli:run_command",  # runpod-flash's name for `flash run`
    "login": "flash_runtime.deploy.login:login_command",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-v", prog_name="flash")
def main() -> None:
    """Build, deploy and run Runpod Flash apps.

    The project's .env (in the working directory or above) is read first: its variables (e.g.
    RUNPOD_API_KEY) apply to every command unless already set in the environment.
    """
    from .protocol.credentials import load_dotenv

    load_dotenv()
