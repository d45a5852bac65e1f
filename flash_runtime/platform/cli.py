"""``flash platform start|stop|status`` and ``flash logs ENDPOINT``."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import click
import orjson

from .._terminal import fail
from ..errors import FlashError
from ..protocol.local import PlatformConfig
from . import db, process

__all__ = ["logs_command", "platform_group"]

FOLLOW_POLL_S = 0.5


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


@platform_group.command("status")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_command(as_json: bool) -> None:
    """The platform's URL, API key, endpoints and workers."""
    config = PlatformConfig.load()
    try:
        status = collect_status(config)
    except FlashError as err:
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


def _endpoint_logs(config: PlatformConfig, endpoint: str) -> tuple[str, Path]:
    """(endpoint id, its log directory) for an id or a name."""
    for spec, _ in _saved_endpoints(config):
        if endpoint in (spec.id, spec.name):
            return spec.id, config.logs_dir / spec.id
    direct = config.logs_dir / endpoint
    if direct.is_dir():  # a removed endpoint's logs stay readable by id
        return endpoint, direct
    raise FlashError(
        f"no endpoint {endpoint!r} on this platform ({config.home}); "
        "`flash platform status` lists them"
    )


@click.command("logs")
@click.argument("endpoint")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines.")
@click.option("--tail", "-n", type=int, default=None, help="Only the last N lines of each log.")
def logs_command(endpoint: str, follow: bool, tail: int | None) -> None:
    """Print the logs of an endpoint's workers (ENDPOINT: id or name)."""
    config = PlatformConfig.load()
    try:
        endpoint_id, directory = _endpoint_logs(config, endpoint)
    except FlashError as err:
        fail(err)
    offsets: dict[Path, int] = {}
    files = _log_files(directory)
    if not files and not follow:
        click.echo(f"no worker logs yet for {endpoint_id} ({directory})", err=True)
    for path in files:
        click.echo(f"==> worker {path.stem} ({path}) <==")
        data = path.read_bytes()
        text = data.decode(errors="replace")
        if tail is not None:
            text = "\n".join(text.splitlines()[-tail:]) + ("\n" if text else "")
        click.echo(text, nl=False)
        offsets[path] = len(data)
    current: Path | None = files[-1] if files else None
    while follow:
        time.sleep(FOLLOW_POLL_S)
        for path in _log_files(directory):
            try:
                size = path.stat().st_size
            except OSError:
                continue
            offset = offsets.get(path, 0)
            if size < offset:  # rotated (copy-truncate)
                offset = 0
            if size == offset:
                continue
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
            offsets[path] = offset + len(data)
            if path != current:
                click.echo(f"==> worker {path.stem} ({path}) <==")
                current = path
            click.echo(data.decode(errors="replace"), nl=False)


def _log_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(directory.glob("*.log"), key=lambda p: p.stat().st_mtime)
