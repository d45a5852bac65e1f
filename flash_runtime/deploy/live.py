"""Live provisioning: a script's call of an endpoint that is not deployed deploys the project.

runpod-flash runs a decorated function called from a plain script on a worker, provisioning
the endpoint on the fly. Here the script's call first goes to the deployed app
(:mod:`flash_runtime.calls.context`); when the endpoint is not there (no build, no such
environment, or not in its build), :func:`provision` builds the project and releases it to the
app's ``live`` environment, endpoints named ``live-NAME`` as ``flash run`` names them, waits for
their workers and hands the new manifest back, so the call (and every later call of this
process) goes there. It says so on one line of standard error. Each script run sends the current
code: the deployer changes only what differs, so an unchanged project costs a build from cache
and a few queries.

The remote client (the worker's side of the house, which must not import this one) loads this
module by name, only in a script, only when a call finds nothing deployed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import FlashError, RemoteCallError
from ..manifest import Manifest
from ..protocol.target import Target
from .deployer import DEFAULT_WAIT_S, LIVE_ENVIRONMENT, LIVE_PREFIX


@dataclass(frozen=True)
class Provisioned:
    """What a script's calls go to after :func:`provision`."""

    manifest: Manifest
    manifest_path: Path
    target: Target
    app: str
    environment: str = LIVE_ENVIRONMENT


def project_of(source: Path) -> Path:
    """The project a function defined in ``source`` belongs to (as the CLI finds it from a
    directory: :func:`flash_runtime.pack.project.find_root`)."""
    from ..pack.project import find_root

    return find_root(source.resolve().parent)


def _target(platform: str | None) -> Target:
    """The platform the script calls; the local one is started if it does not answer."""
    from ..platform.process import ensure_running, healthy
    from ..protocol.local import PlatformConfig
    from .target import resolve

    target = resolve(platform)
    if target.platform == "local" and healthy(target.api_url) is None:
        ensure_running(PlatformConfig.load())
    return target


async def provision(project: Path, callee: str) -> Provisioned:
    """Build ``project`` and release it to its app's ``live`` environment; ``callee`` (the
    endpoint called, not found where the script looked) is named in the line printed."""
    from ..pack import build
    from ..protocol.controlplane import ControlPlaneClient
    from .deployer import release

    platform = os.environ.get("FLASH_PLATFORM") or None
    app = os.environ.get("FLASH_APP") or project.name
    where = f"{app}/{os.environ.get('FLASH_ENV') or 'production'}"
    try:
        target = await asyncio.to_thread(_target, platform)
        print(
            f"flash: endpoint {callee!r} is not deployed in {where}; deploying {project} to "
            f"{app}/{LIVE_ENVIRONMENT} on the {target.platform} platform (FLASH_CALLS=local runs "
            "calls in this process instead)",
            file=sys.stderr,
            flush=True,
        )
        built = await asyncio.to_thread(build, project, console=None)
        async with ControlPlaneClient(target) as client:
            await release(
                client,
                artifact=built.artifact,
                manifest=built.manifest,
                manifest_path=built.manifest_path,
                app_name=app,
                environment_name=LIVE_ENVIRONMENT,
                name_prefix=LIVE_PREFIX,
                wait_s=DEFAULT_WAIT_S,
            )
    except FlashError as err:
        if isinstance(err, RemoteCallError):
            raise
        raise RemoteCallError(
            callee, "not_deployed", f"deploying {project} to {app}/live failed: {err}"
        ) from None
    return Provisioned(built.manifest, built.manifest_path, target, app)
