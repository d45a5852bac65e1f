"""``flash platform start|stop|status|env`` and ``flash logs ENDPOINT``."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import click
import orjson

from .._terminal import fail, fail_json
from ..errors import FlashError
from ..protocol.local import PlatformConfig
from . import db, logs, process

__all__ = ["logs_command", "platform_group"]

FOLLOW_POLL_S = 0.2


@click.group("platform")
def platform_group() -> None:
    """Run the local platform: Runpod's APIs and workers on this machine."""


@platform_group.command("start")
@click.option("--foreground", is_flag=True, help="Run in this terminal and print its log.")
@click.option("--port", type=int, default=None, help="Port to listen on (default from the URL).")
@click.option(
    "--workers",
    type=click.Choice(["process", "docker"]),
    default=None,
    help="Where workers run: processes in their image's environment (default), or "
    "containers of their image (FLASH_PLATFORM_WORKERS).",
)
def start_command(foreground: bool, port: int | None, workers: str | None) -> None:
    """Start the platform (in the background unless --foreground)."""
    if workers is not None:
        os.environ["FLASH_PLATFORM_WORKERS"] = workers
    config = PlatformConfig.load()
    if port is not None:
        os.environ["FLASH_PLATFORM_URL"] = process.with_port(config.url, port)
        config = PlatformConfig.load()
    if foreground:
        from .server import main

        sys.exit(main())
    try:
        info = process.start(config)
    except FlashError as err:
        fail(err)
    click.echo(f"platform running at {info['url']} (pid {info['pid']})")
    click.echo(f"API key: {config.api_key}")
    click.echo(f"log: {process.log_path(config)}")


@platform_group.command("stop")
def stop_command() -> None:
    """Stop the platform; workers finish their in-flight work first."""
    config = PlatformConfig.load()
    try:
        pid = process.stop(config)
    except FlashError as err:
        fail(err)
    click.echo("platform was not running" if pid is None else f"platform stopped (pid {pid})")


@platform_group.command("env")
@click.option("--start", is_flag=True, help="Start the platform first unless it runs.")
def env_command(start: bool) -> None:
    """Shell lines pointing the Runpod SDK (2.0's `rp` and `runpod.App`, or 1.x's client) at
    this platform: `eval "$(flash platform env)"`."""
    import shlex

    from . import tls

    config = PlatformConfig.load()
    if start:
        try:
            process.ensure_running(config)
        except FlashError as err:
            fail(err)
    tls.ensure_certificates(config)  # the bundle exists before the platform first starts
    for key, value in tls.client_environment(config).items():
        click.echo(f"export {key}={shlex.quote(value)}")


@platform_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_command(as_json: bool) -> None:
    """The platform's URL, API key, endpoints and workers."""
    config = PlatformConfig.load()
    try:
        status = collect_status(config)
    except FlashError as err:
        if as_json:
            fail_json(err)
        fail(err)
    if as_json:
        click.echo(orjson.dumps(status, option=orjson.OPT_INDENT_2).decode())
        return
    backend = f"  workers: {status['workers']}" if status.get("workers") else ""
    click.echo(
        f"platform: {'running' if status['running'] else 'stopped'}  {status['url']}{backend}"
    )
    click.echo(f"API key:  {status['api_key']}")
    if not status["endpoints"]:
        click.echo("no endpoints")
    for ep in status["endpoints"]:
        click.echo(f"\n{ep['name']}  {ep['type']}  {ep['id']}  {ep['url'] or ''}")
        figures = ep.get("figures")
        if figures:
            jobs = figures.get("jobs") or {}
            done = ", ".join(f"{n} {status}" for status, n in jobs.items()) or "none"
            line = (
                f"  jobs {done}" if ep["type"] == "qb" else f"  {figures['lbRequests']} LB requests"
            )
            if ep["type"] == "lb" and figures.get("lbErrors"):
                line += f" ({figures['lbErrors']} 5xx)"
            if figures.get("restarts"):
                line += f"; {figures['restarts']} worker restart(s)"
            click.echo(line)
        for w in ep.get("workers", []):
            where = f"  container {w['container']}" if w.get("container") else ""
            gpus = f"  GPUs {','.join(map(str, w['gpus']))}" if w.get("gpus") else ""
            click.echo(
                f"  worker {w['id']}  {w['state']:<9} pid {w['pid']}  jobs {w['jobs']}  "
                f"in flight {w['inFlight']}  up {w['uptime']}s{where}{gpus}"
            )
        error = (ep.get("health") or {}).get("lastError")
        if error:
            click.echo(
                f"  ! worker {error.get('workerId')} exited with code {error.get('exitCode')}"
                f"{' before it was ready' if error.get('beforeReady') else ''};"
                f" log: {error.get('log')}"
            )
            for line in error.get("lastLines", [])[-10:]:
                click.echo(f"    | {line}")


def collect_status(config: PlatformConfig) -> dict[str, Any]:
    """``{"url", "api_key", "running", "pid", "endpoints": [...]}`` from the running
    platform, else from the database (endpoints without workers)."""
    info = process.running(config)
    if info is not None:
        url = info.get("url") or config.url
        live = process.fetch_status(config, url)
        return {
            "url": url,
            "api_key": config.api_key,
            "running": True,
            "pid": info.get("pid"),
            "workers": live.get("workers"),
            "endpoints": live["endpoints"],
        }
    return {
        "url": config.url,
        "api_key": config.api_key,
        "running": False,
        "pid": None,
        "endpoints": [
            {
                "id": spec.id,
                "name": spec.name,
                "type": spec.type,
                "url": (
                    f"http://{config.host}:{port}"
                    if spec.type == "lb" and port
                    else f"{config.url}/v2/{spec.id}"
                ),
                "workers": [],
            }
            for spec, port in _saved_endpoints(config)
        ],
    }


def _saved_endpoints(config: PlatformConfig) -> list[Any]:
    from .storage import load_endpoints

    if not config.db_path.exists():
        return []
    conn = db.connect(config.db_path)
    try:
        return load_endpoints(conn)
    finally:
        conn.close()


def _select_endpoints(
    config: PlatformConfig, endpoint: str | None, app: str | None, env: str | None
) -> list[logs.Endpoint]:
    """The endpoints whose logs to read: ENDPOINT by id; else by name (or all of them) in the
    app and environment (defaults: the current directory's name and ``production``); a name
    found only elsewhere is an error that says where."""
    from .controlplane_store import ControlPlaneStore

    if not config.db_path.exists():
        raise FlashError(f"no platform state in {config.home}: nothing was deployed here yet")
    conn = db.connect(config.db_path)
    try:
        store = ControlPlaneStore(conn)
        rows = [  # (app, env, endpoint)
            (app_record.name, env_record.name, ep)
            for app_record in store.apps()
            for env_record in store.environments(app_record.id)
            for ep in store.endpoints(env_record.id)
        ]
    finally:
        conn.close()
    specs = [spec for spec, _ in _saved_endpoints(config)]

    def chosen(ep: Any) -> logs.Endpoint:
        return logs.Endpoint(ep.id, ep.name, "lb" if ep.type == "LB" else "qb")

    if endpoint is not None:
        by_id = [chosen(ep) for _, _, ep in rows if ep.id == endpoint]
        if by_id:
            return by_id
        # One the runtime runs outside any app (applied directly), by id or name.
        managed = {ep.id for _, _, ep in rows}
        loose = [s for s in specs if s.id not in managed and endpoint in (s.id, s.name)]
        if loose:
            return [logs.Endpoint(s.id, s.name, s.type) for s in loose]
        if (config.logs_dir / endpoint).is_dir():  # a removed endpoint's logs, by id
            return [logs.Endpoint(endpoint, endpoint)]
    from ..pack.project import default_app_name

    app = default_app_name(app)
    env = env or "production"
    here = [r for r in rows if r[0] == app and r[1] == env]
    if endpoint is None:
        if not here:
            raise FlashError(f"no endpoints in {app}/{env}; give --app and --env")
        return [chosen(ep) for _, _, ep in here]
    named = [chosen(ep) for _, _, ep in here if ep.name == endpoint]
    if named:
        return named
    elsewhere = sorted(f"{a}/{e}" for a, e, ep in rows if ep.name == endpoint)
    where = f"; it is in {', '.join(elsewhere)} (give --app and --env)" if elsewhere else ""
    raise FlashError(f"no endpoint {endpoint!r} in {app}/{env}{where}")


def _since(value: str | None) -> float | None:
    """``--since``: a duration back from now (``90s``, ``10m``, ``2h``, ``1d``) or a time
    (ISO 8601, UTC unless it says otherwise)."""
    if not value:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if value[-1:] in units and value[:-1].replace(".", "", 1).isdigit():
        return time.time() - float(value[:-1]) * units[value[-1]]
    from datetime import UTC, datetime

    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: give a duration (30s, 10m, 2h, 1d) or a time (2026-12-01T14:00:00)",
            param_hint="--since",
        ) from None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()


@click.command("logs")
@click.argument("endpoint", required=False)
@click.option("--app", "-a", "app_name", default=None, help="App (default: the project's name).")
@click.option("--env", "-e", "env_name", default=None, help="Environment (default: production).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.option("--since", default=None, help="Only lines since: 30s, 10m, 2h, 1d, or a time.")
@click.option("--worker", default=None, help="Only this worker's lines.")
@click.option("--request", "request_id", default=None, help="Only lines of this request or job id.")
@click.option(
    "--tail", "-n", type=click.IntRange(min=0), default=None, help="Only the last N lines."
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def logs_command(
    endpoint: str | None,
    app_name: str | None,
    env_name: str | None,
    follow: bool,
    since: str | None,
    worker: str | None,
    request_id: str | None,
    tail: int | None,
    as_json: bool,
) -> None:
    """Print the logs of endpoints' workers, oldest first, merged (ENDPOINT: a name in the
    app and environment, or an id; none: all of them). Each line carries its time, endpoint,
    worker and request or job id; --request follows one request across endpoints."""
    config = PlatformConfig.load()
    try:
        endpoints = _select_endpoints(config, endpoint, app_name, env_name)
    except FlashError as err:
        if as_json:
            fail_json(err)
        fail(err)
    since_at = _since(since)

    def emit(lines: list[dict[str, Any]]) -> None:
        for entry in lines:
            click.echo(orjson.dumps(entry).decode() if as_json else logs.text(entry))

    lines, cursor = logs.read(
        config, endpoints, since=since_at, worker=worker, request=request_id, tail=tail
    )
    emit(lines)
    if not lines and not follow and not as_json and tail != 0:
        names = ", ".join(ep.name for ep in endpoints)
        click.echo(f"no log lines yet for {names}", err=True)
    try:
        while follow:
            time.sleep(FOLLOW_POLL_S)
            lines, cursor = logs.read(
                config, endpoints, since=since_at, worker=worker, request=request_id, cursor=cursor
            )
            emit(lines)
    except KeyboardInterrupt:
        pass
