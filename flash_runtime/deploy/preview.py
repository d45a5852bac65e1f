"""``flash deploy --preview``: the deployment tried in containers on this machine first.

A temporary local platform (its own ``FLASH_HOME`` and loopback port, the ``docker`` worker
backend: every worker a container of its endpoint's image) receives the deploy into a
``preview`` environment; the deploy waits for one container per endpoint, prints the endpoints
as ``flash deploy`` does, and everything (platform, containers, files) is removed on Ctrl-C.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from ..platform import process
from ..protocol.local import PlatformConfig
from ..protocol.target import Target, local_target
from .deployer import DeployResult


def run_preview(
    console: Console, deploy: Callable[[Target], DeployResult], *, as_json: bool = False
) -> None:
    """Start the temporary platform, ``deploy`` to it, and hold it until Ctrl-C (or SIGTERM)."""
    import json

    from ..platform.runtime import free_port
    from .summary import print_deployment

    # The preview platform's own home (state, artifacts, logs) and port; builds keep using the
    # user's FLASH_HOME and its dependency cache.
    home = Path(tempfile.mkdtemp(prefix="flash-preview-"))
    config = dataclasses.replace(PlatformConfig.load(home), url=f"http://127.0.0.1:{free_port()}")
    target = local_target(config)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    saved = os.environ.get("FLASH_PLATFORM_WORKERS")
    try:
        os.environ["FLASH_PLATFORM_WORKERS"] = "docker"  # for the platform process only
        try:
            info = process.start(config)
        finally:
            if saved is None:
                os.environ.pop("FLASH_PLATFORM_WORKERS", None)
            else:
                os.environ["FLASH_PLATFORM_WORKERS"] = saved
        console.print(
            f"[dim]Preview platform at {info['url']} (docker workers, key {config.api_key})[/dim]"
        )
        result = deploy(target)
        if as_json:
            preview = {"platform": info["url"], "apiKey": config.api_key, "home": str(home)}
            print(json.dumps({**result.to_json(), "preview": preview}), flush=True)
        else:
            print_deployment(console, result, target)
        console.print("[bold]Preview running.[/bold] Press Ctrl+C to stop it and remove it.")
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        console.print("[dim]Stopping the preview: its containers are removed[/dim]")
        try:
            process.stop(config)
        finally:
            shutil.rmtree(home, ignore_errors=True)
