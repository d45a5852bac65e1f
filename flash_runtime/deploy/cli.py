"""The deploy commands: ``flash deploy``, ``flash undeploy``, ``flash app ...``, ``flash env ...``.

Plain click objects that the ``flash`` group mounts. Each resolves the target platform
(``--platform``, default local unless ``RUNPOD_API_KEY`` holds a Runpod key), runs the operation
through the control-plane client and prints the outcome; ``--json`` prints data for scripts
instead. Expected failures (FlashError) print their message in red and exit with code 1.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from .._terminal import handles_errors, new_console
from ..errors import FlashError
from ..pack.cli import (
    exclude_option,
    image_repository_option,
    no_deps_option,
    output_option,
    python_version_option,
)
from ..protocol.target import PLATFORMS, Target

if TYPE_CHECKING:
    from ..protocol.controlplane import ControlPlaneClient
    from .deployer import DeployResult

DEFAULT_ENVIRONMENT = "production"  # as the deployer's (not imported: it loads the packer)
T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _platform_option(command: F) -> F:
    return click.option(
        "--platform",
        type=click.Choice(PLATFORMS),
        help="The platform: local, or Runpod (needs RUNPOD_API_KEY). Default: local, unless "
        "RUNPOD_API_KEY holds a Runpod key.",
    )(command)


def _json_option(command: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")(command)


def _app_option(command: F) -> F:
    return click.option(
        "--app",
        "-a",
        "app_name",
        help="The app (default: the project directory's name, as `flash deploy` names it).",
    )(command)


def _env_option(default: str | None, help: str) -> Callable[[F], F]:
    return click.option(
        "--env", "-e", "env_name", default=default, show_default=default is not None, help=help
    )


def _default_app(app_name: str | None) -> str:
    from ..pack.project import default_app_name

    return default_app_name(app_name)


def _call(target: Target, operation: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``operation(client)`` with a control-plane client for ``target``."""
    from ..protocol.controlplane import ControlPlaneClient

    async def run() -> T:
        async with ControlPlaneClient(target) as client:
            return await operation(client)

    return asyncio.run(run())


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def _confirm(question: str, yes: bool) -> None:
    if not yes and not click.confirm(question, default=False):
        new_console(stderr=True).print("cancelled")
        sys.exit(1)


# flash deploy / undeploy


@click.command("deploy")
@_env_option(DEFAULT_ENVIRONMENT, "Environment to deploy to.")
@_app_option
@exclude_option
@no_deps_option
@image_repository_option
@python_version_option
@output_option
@click.option(
    "--no-wait",
    is_flag=True,
    help="Return once the endpoints are saved, without waiting for workers.",
)
@click.option(
    "--wait-timeout",
    type=click.FloatRange(min=1),
    default=600,
    show_default=True,
    help="Seconds to wait for each changed endpoint to have a ready worker.",
)
@click.option(
    "--preview",
    is_flag=True,
    help="Try the deployment in containers on this machine first: a temporary local platform "
    "with the docker backend, one container per endpoint, removed on Ctrl-C.",
)
@_platform_option
@_json_option
@handles_errors
def deploy_command(
    env_name: str,
    app_name: str | None,
    exclude: tuple[str, ...],
    no_deps: bool,
    image_repository: str | None,
    python_version: str | None,
    output: Path | None,
    no_wait: bool,
    wait_timeout: float,
    preview: bool,
    platform: str | None,
    as_json: bool,
) -> None:
    """Build the project and deploy it to an environment of its app.

    Creates the app and the environment when they do not exist, uploads the build, releases it
    to the environment and creates, updates or deletes endpoints to match the manifest, then
    waits until each changed endpoint has a ready worker (a worker that crashes at start fails
    the deploy). The local platform is started when it is not running.
    """
    from ..pack.project import find_root
    from .deployer import deploy
    from .summary import print_deployment
    from .target import resolve

    console = new_console(stderr=as_json)
    project = find_root()

    def run(target: Target, environment: str, wait: bool) -> DeployResult:
        return deploy(
            project,
            target,
            app_name=app_name,
            environment_name=environment,
            exclude=exclude,
            no_deps=no_deps,
            image_repository=image_repository,
            python_version=python_version,
            output=output,
            console=console,
            wait_s=wait_timeout if wait else None,
        )

    if preview:
        from .preview import run_preview

        if platform == "runpod":
            raise click.UsageError("--preview runs on this machine: leave out --platform runpod")
        # The preview waits for its containers whatever --no-wait says: that is what it shows.
        run_preview(console, lambda target: run(target, "preview", True), as_json=as_json)
        return
    target = resolve(platform, start=True)
    console.print(f"[dim]Deploying to the {target.platform} platform at {target.api_url}[/dim]")
    result = run(target, env_name, not no_wait)
    if as_json:
        _echo_json(result.to_json())
    else:
        print_deployment(console, result, target)


_LIST = "list"


@click.command("undeploy")
@click.argument("name", required=False)
@_env_option(None, "The environment (default: production; `list` without it: every one).")
@_app_option
@click.option("--all", "all_endpoints", is_flag=True, help="Delete every endpoint of the env.")
@click.option(
    "--interactive", "-i", is_flag=True, help="Choose the endpoints to delete from a list."
)
@click.option("--yes", "-y", "--force", "-f", "yes", is_flag=True, help="Do not ask first.")
@_platform_option
@_json_option
@handles_errors
def undeploy_command(
    name: str | None,
    env_name: str | None,
    app_name: str | None,
    all_endpoints: bool,
    interactive: bool,
    yes: bool,
    platform: str | None,
    as_json: bool,
) -> None:
    """Delete endpoints: NAME (one endpoint of the environment), --all (all of them), or
    `list` to show what is deployed. The environment and its builds stay.

    \b
      flash undeploy list
      flash undeploy my-api
      flash undeploy --all --env staging
      flash undeploy -i
    """
    from .manage import remove_endpoints
    from .target import resolve

    app = _default_app(app_name)
    target = resolve(platform)
    if name == _LIST:
        _undeploy_list(target, app, env_name, as_json)
        return
    if sum((bool(name), all_endpoints, interactive)) != 1:
        raise click.UsageError(
            "name one endpoint (flash undeploy NAME), or give --all for every endpoint of the "
            "environment or -i to choose; `flash undeploy list` shows them"
        )
    env = env_name or DEFAULT_ENVIRONMENT
    environment = _call(target, lambda client: _environment(client, app, env))
    endpoints = environment.get("endpoints") or []
    if interactive and endpoints:
        environment = {**environment, "endpoints": _choose(endpoints)}
        if not environment["endpoints"]:
            new_console().print("Nothing chosen.")
            return
    if name:
        chosen = [ep for ep in endpoints if ep["name"] == name]
        if not chosen:
            known = ", ".join(sorted(ep["name"] for ep in endpoints)) or "none"
            raise FlashError(f"no endpoint {name!r} in {app}/{env} (its endpoints: {known})")
        environment = {**environment, "endpoints": chosen}
    elif not endpoints:
        if as_json:
            _echo_json({"app": app, "environment": env, "deleted": []})
        else:
            new_console().print(f"Nothing to undeploy: {app}/{env} has no endpoints.")
        return
    names = ", ".join(ep["name"] for ep in environment["endpoints"])
    _confirm(f"Delete endpoint(s) {names} of {app}/{env}?", yes)
    removed = _call(target, lambda client: remove_endpoints(client, app, environment))
    if as_json:
        _echo_json({"app": app, "environment": env, "deleted": removed})
        return
    console = new_console()
    for endpoint in removed:
        console.print(
            f"[green]✓[/green] deleted endpoint {endpoint['name']} [dim]{endpoint['id']}[/dim]"
        )


def _choose(endpoints: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``--interactive``: the endpoints picked by number from a list."""
    console = new_console(stderr=True)
    for i, ep in enumerate(endpoints, 1):
        console.print(f"  {i}. {ep['name']}  [dim]{ep['id']}[/dim]")
    while True:
        answer = click.prompt("Delete which (numbers, e.g. 1,3; all; or none)", err=True)
        words = [w for w in answer.replace(",", " ").split() if w]
        if words == ["all"]:
            return endpoints
        if words in ([], ["none"]):
            return []
        if all(w.isdigit() and 1 <= int(w) <= len(endpoints) for w in words):
            return [endpoints[int(w) - 1] for w in dict.fromkeys(words)]
        console.print(f"[red]give numbers from 1 to {len(endpoints)}, all or none[/red]")


async def _environment(client: ControlPlaneClient, app: str, env: str) -> dict[str, Any]:
    found = await client.app_by_name(app)
    summary = await client.environment_by_name(found["id"], env)
    return dict(await client.environment(summary["id"]))


def _undeploy_list(target: Target, app: str, env_name: str | None, as_json: bool) -> None:
    """``flash undeploy list``: the app's endpoints, every environment's unless one is named."""
    from .manage import environment_details

    async def gather(client: ControlPlaneClient) -> list[dict[str, Any]]:
        found = await client.app_by_name(app)
        names = [env_name] if env_name else [e["name"] for e in found["flashEnvironments"]]
        return [await environment_details(client, app, name) for name in names]

    rows = [
        {"environment": details["name"], **endpoint}
        for details in _call(target, gather)
        for endpoint in details["endpoints"]
    ]
    if as_json:
        _echo_json(rows)
        return
    console = new_console()
    if not rows:
        console.print(f"No endpoints deployed in {app}.")
        return
    width = max(len(row["resource"]) for row in rows)
    for row in rows:
        console.print(
            f"  {row['environment']}  {row['resource']:<{width}}  {row['type']}  "
            f"{row['url'] or '-'}  [dim]{row['id']}[/dim]"
        )


# flash app ...


@click.group("app")
def app_group() -> None:
    """List, inspect, create and delete apps."""


@app_group.command("list")
@_platform_option
@_json_option
@handles_errors
def app_list(platform: str | None, as_json: bool) -> None:
    """List the apps with their environments."""
    from .target import resolve

    apps = _call(resolve(platform), lambda client: client.list_apps())
    if as_json:
        _echo_json(apps)
        return
    console = new_console()
    if not apps:
        console.print("No apps yet: `flash deploy` creates one.")
        return
    width = max(len(app["name"]) for app in apps)
    for app in apps:
        envs = ", ".join(f"{e['name']} ({e['state']})" for e in app["flashEnvironments"]) or "-"
        builds = len(app["flashBuilds"])
        console.print(f"  {app['name']:<{width}}  [dim]{builds} build(s)[/dim]  {envs}")


@app_group.command("get")
@click.argument("name")
@_platform_option
@_json_option
@handles_errors
def app_get(name: str, platform: str | None, as_json: bool) -> None:
    """Show an app: its environments and latest builds."""
    from .target import resolve

    app = _call(resolve(platform), lambda client: client.app_by_name(name))
    if as_json:
        _echo_json(app)
        return
    console = new_console()
    console.print(f"[bold]{app['name']}[/bold] [dim]{app['id']}[/dim]")
    envs = app["flashEnvironments"]
    if not envs:
        console.print("  no environments: `flash deploy --app NAME --env ENV` creates one")
    for env in envs:
        build = (env.get("activeBuildId") or "-")[:8]
        console.print(f"  {env['name']}  {env['state']}  [dim]build {build}[/dim]")
    builds = app["flashBuilds"]
    console.print(f"  [dim]{len(builds)} build(s)[/dim]")
    for build in builds[:3]:
        console.print(f"  [dim]{build['id'][:8]}  {build['createdAt']}[/dim]")


@app_group.command("create")
@click.argument("name")
@_platform_option
@handles_errors
def app_create(name: str, platform: str | None) -> None:
    """Create an app (`flash deploy` creates it too when needed)."""
    from .target import resolve

    app = _call(resolve(platform), lambda client: client.create_app(name))
    new_console().print(f"[green]✓[/green] created app {app['name']} [dim]{app['id']}[/dim]")


@app_group.command("delete")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@_platform_option
@handles_errors
def app_delete(name: str, yes: bool, platform: str | None) -> None:
    """Delete an app with all its environments, endpoints and builds."""
    from .manage import delete_app
    from .target import resolve

    target = resolve(platform)
    app = _call(target, lambda client: client.app_by_name(name))
    envs = ", ".join(e["name"] for e in app["flashEnvironments"]) or "none"
    _confirm(f"Delete app {name} and everything in it (environments: {envs})?", yes)
    removed = _call(target, lambda client: delete_app(client, app))
    console = new_console()
    for endpoint in removed:
        console.print(f"[green]✓[/green] deleted endpoint {endpoint}")
    console.print(f"[green]✓[/green] deleted app {name}")


# flash env ...


@click.group("env")
def env_group() -> None:
    """List, inspect, create and delete the environments of an app."""


@env_group.command("list")
@_app_option
@_platform_option
@_json_option
@handles_errors
def env_list(app_name: str | None, platform: str | None, as_json: bool) -> None:
    """List the app's environments."""
    from .target import resolve

    app_ = _default_app(app_name)
    app = _call(resolve(platform), lambda client: client.app_by_name(app_))
    envs = app["flashEnvironments"]
    if as_json:
        _echo_json(envs)
        return
    console = new_console()
    if not envs:
        console.print(f"App {app_} has no environments: `flash deploy --env NAME` creates one.")
        return
    width = max(len(env["name"]) for env in envs)
    for env in envs:
        build = (env.get("activeBuildId") or "-")[:8]
        console.print(f"  {env['name']:<{width}}  {env['state']:<9}  [dim]build {build}[/dim]")


@env_group.command("get")
@click.argument("name")
@_app_option
@_platform_option
@_json_option
@handles_errors
def env_get(name: str, app_name: str | None, platform: str | None, as_json: bool) -> None:
    """Show an environment: its state, build and endpoints with their URLs."""
    from .manage import environment_details
    from .target import resolve

    app = _default_app(app_name)
    details = _call(resolve(platform), lambda client: environment_details(client, app, name))
    if as_json:
        _echo_json(details)
        return
    console = new_console()
    build = (details["activeBuildId"] or "-")[:8]
    console.print(f"[bold]{app}/{name}[/bold]  {details['state']}  [dim]build {build}[/dim]")
    if not details["endpoints"]:
        console.print(f"  no endpoints: `flash deploy --env {name}` creates them")
    for ep in details["endpoints"]:
        console.print(
            f"  {ep['resource']}  {ep['type']}  {ep['url'] or '-'}  [dim]{ep['id']}[/dim]"
        )
    for volume in details["networkVolumes"]:
        where = f"  {volume['localPath']}" if volume.get("localPath") else ""
        console.print(f"  volume {volume['name']}  [dim]{volume['id']}[/dim]{where}")


@env_group.command("create")
@click.argument("name")
@_app_option
@_platform_option
@handles_errors
def env_create(name: str, app_name: str | None, platform: str | None) -> None:
    """Create an environment (and its app if needed)."""
    from .manage import create_environment
    from .target import resolve

    app = _default_app(app_name)
    env, created_app = _call(
        resolve(platform), lambda client: create_environment(client, app, name)
    )
    console = new_console()
    if created_app:
        console.print(f"[green]✓[/green] created app {app}")
    console.print(f"[green]✓[/green] created environment {env['name']} [dim]{env['id']}[/dim]")


@env_group.command("delete")
@click.argument("name")
@_app_option
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@_platform_option
@handles_errors
def env_delete(name: str, app_name: str | None, yes: bool, platform: str | None) -> None:
    """Delete an environment and its endpoints."""
    from .manage import delete_environment
    from .target import resolve

    app = _default_app(app_name)
    target = resolve(platform)

    async def lookup(client: Any) -> dict[str, Any]:
        found = await client.app_by_name(app)
        return dict(await client.environment_by_name(found["id"], name))

    env = _call(target, lookup)
    endpoints = ", ".join(ep["name"] for ep in env.get("endpoints") or []) or "none"
    question = f"Delete environment {app}/{name} and its endpoints ({endpoints})"
    volumes = ", ".join(str(v.get("name")) for v in env.get("networkVolumes") or [])
    if volumes and target.platform == "local":  # here an environment's volume data is its own
        question += f", with the data of its network volume(s) {volumes}"
    _confirm(question + "?", yes)
    removed = _call(target, lambda client: delete_environment(client, app, env["id"]))
    console = new_console()
    for endpoint in removed:
        console.print(f"[green]✓[/green] deleted endpoint {endpoint}")
    console.print(f"[green]✓[/green] deleted environment {app}/{name}")
