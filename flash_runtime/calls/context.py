"""Where a call to another endpoint goes: which manifest, which control plane, which environment.

Inside a worker (``FLASH_RESOURCE_NAME`` set) everything comes from the worker's environment, as
the deployer and the platform set it: the manifest of the extracted artifact
(``$FLASH_APP_DIR/flash_manifest.json``), the control plane at ``RUNPOD_API_BASE_URL`` (default
``https://api.runpod.io``) with ``RUNPOD_API_KEY``, and the environment ``FLASH_ENVIRONMENT_ID``
(else ``FLASH_APP`` + ``FLASH_ENV``).

Outside a worker (a script or a notebook; ``FLASH_CALLS`` unset or ``remote``) the manifest is the
project's ``.flash/flash_manifest.json`` (``FLASH_MANIFEST_PATH`` overrides), found from the
called function's source file upwards; the control plane is the platform ``flash deploy`` would
use (``FLASH_PLATFORM``, else Runpod when ``RUNPOD_API_KEY`` holds a Runpod key, else the local
platform); the environment is ``FLASH_ENV`` (default ``production``) of the app ``FLASH_APP``
(default the project's name, as ``flash deploy`` names it).
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import manifest as manifest_mod
from ..errors import FlashError, ManifestError, RemoteCallError
from ..manifest import Manifest
from ..protocol.target import RUNPOD_API_URL, RUNPOD_ENDPOINT_URL, Target

DEFAULT_ENVIRONMENT = "production"  # the deployer's default, which a script targets too


@dataclass(frozen=True)
class Scope:
    """The deployed environment peers are looked up in: by id (workers know theirs), or by app
    and environment name (scripts)."""

    environment_id: str | None = None
    app: str | None = None
    environment: str = DEFAULT_ENVIRONMENT

    def __str__(self) -> str:
        if self.environment_id:
            return f"environment {self.environment_id}"
        return f"environment {self.environment!r} of app {self.app!r}"


@dataclass(frozen=True)
class CallContext:
    """What a process needs to call the functions of its app's other endpoints."""

    manifest: Manifest
    manifest_source: str  # where the manifest was read, for messages
    target: Target  # the control plane (its URL and key); the key also authorises the calls
    scope: Scope


def _worker_context(env: Mapping[str, str], callee: str) -> CallContext:
    from ..worker.config import WorkerConfig

    resource = env.get("FLASH_RESOURCE_NAME", "")
    path = WorkerConfig.from_env(env).app_dir / manifest_mod.MANIFEST_NAME
    manifest = _load(path, callee)
    key = (env.get("RUNPOD_API_KEY") or "").strip()
    if not key:
        raise RemoteCallError(
            callee,
            "unauthorized",
            "this worker has no RUNPOD_API_KEY, so it cannot look up or call other endpoints. "
            "The deployer gives the key to endpoints whose code calls another endpoint's "
            f"function (makes_remote_calls in the manifest, which is false for {resource!r}): "
            "call the function directly from a module of this endpoint and redeploy, or set "
            "RUNPOD_API_KEY in its env",
        )
    scope = Scope(
        environment_id=env.get("FLASH_ENVIRONMENT_ID") or None,
        app=env.get("FLASH_APP") or None,
        environment=env.get("FLASH_ENV") or DEFAULT_ENVIRONMENT,
    )
    if scope.environment_id is None and scope.app is None:
        raise RemoteCallError(
            callee,
            "not_deployed",
            "this worker does not know its environment (FLASH_ENVIRONMENT_ID, or FLASH_APP and "
            "FLASH_ENV); deploy the app with `flash deploy`",
        )
    return CallContext(manifest, str(path), worker_target(env, key), scope)


def worker_target(env: Mapping[str, str], key: str) -> Target:
    """The control plane and endpoint URLs as a worker sees them (its env, Runpod's defaults)."""
    api_url = (env.get("RUNPOD_API_BASE_URL") or RUNPOD_API_URL).strip().rstrip("/")
    return Target(
        platform="runpod",
        api_url=api_url,
        api_key=key,
        queue_url_base=(env.get("RUNPOD_ENDPOINT_BASE_URL") or RUNPOD_ENDPOINT_URL).rstrip("/"),
        lb_url_template=None,
        unreachable_hint=f"the control plane at {api_url} did not answer",
        key_hint="the RUNPOD_API_KEY of this endpoint's env",
    )


def _script_context(env: Mapping[str, str], path: Path, callee: str) -> CallContext:
    from ..protocol.target import resolve

    manifest = _load(path, callee)
    try:
        target = resolve(env.get("FLASH_PLATFORM") or None)
    except FlashError as err:
        raise RemoteCallError(callee, "unauthorized", str(err)) from None
    scope = Scope(
        app=env.get("FLASH_APP") or manifest.project_name,
        environment=env.get("FLASH_ENV") or DEFAULT_ENVIRONMENT,
    )
    return CallContext(manifest, str(path), target, scope)


def _load(path: Path, callee: str) -> Manifest:
    try:
        return manifest_mod.load(path)
    except ManifestError as err:
        raise RemoteCallError(callee, "not_deployed", str(err)) from None


def find_manifest(func: Callable[..., Any], env: Mapping[str, str]) -> Path:
    """The manifest a script's call of ``func`` is resolved with: ``FLASH_MANIFEST_PATH``, else
    the first ``.flash/flash_manifest.json`` above ``func``'s source file, else the working
    directory's."""
    explicit = env.get("FLASH_MANIFEST_PATH")
    if explicit:
        return Path(explicit)
    tail = Path(".flash") / manifest_mod.MANIFEST_NAME
    try:
        source = inspect.getsourcefile(inspect.unwrap(func))
    except TypeError:
        source = None
    if source:
        for directory in Path(source).resolve().parents:
            if (directory / tail).is_file():
                return directory / tail
    return Path.cwd() / tail


# The settings a context is built from; a change (a notebook that sets FLASH_ENV) builds anew.
_KEYS = (
    "FLASH_RESOURCE_NAME",
    "FLASH_APP_DIR",
    "FLASH_ENVIRONMENT_ID",
    "FLASH_APP",
    "FLASH_ENV",
    "FLASH_PLATFORM",
    "FLASH_PLATFORM_URL",
    "FLASH_HOME",
    "FLASH_MANIFEST_PATH",
    "RUNPOD_API_KEY",
    "RUNPOD_API_BASE_URL",
    "RUNPOD_ENDPOINT_BASE_URL",
)
_contexts: dict[tuple[Any, ...], CallContext] = {}
_manifest_paths: dict[Callable[..., Any], Path] = {}


def context_for(func: Callable[..., Any], callee: str) -> CallContext:
    """The context of this process's calls of ``func``, a decorated function of the endpoint
    ``callee`` (named in errors)."""
    env = os.environ
    settings = tuple(env.get(k) for k in _KEYS)
    in_worker = bool(settings[0])
    path = None
    if not in_worker:
        path = _manifest_paths.get(func)
        if path is None:
            path = _manifest_paths[func] = find_manifest(func, env)
    key = (settings, path)
    context = _contexts.get(key)
    if context is None:
        if path is None:
            context = _worker_context(env, callee)
        else:
            context = _script_context(env, path, callee)
        _contexts[key] = context
    return context
