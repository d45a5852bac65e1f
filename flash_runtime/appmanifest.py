"""``runpod_manifest.json``: the manifest of a Runpod SDK 2.0 app (``runpod.App``), typed.

``rp flash deploy`` (runpod 2.0) writes it at the root of its artifact, beside the project's
source and an ``env/`` directory of vendored packages (the SDK among them). Its ``resources`` is a
*list* of objects, each with a ``kind`` (``queue``, ``api`` or ``task``), a ``name``, and where
the worker finds the user's object (``module`` and ``qualname``); ``api`` resources add
``routes`` (``method``, ``path``, ``handler``: a method of the class) or ``asgiFactory`` (a
zero-argument function returning an ASGI app). The rest (hardware, scaling, ``env``,
``mounts``) is the deployer's business; keys this schema does not know are kept.

The two formats meet in :func:`as_flash_manifest`: a 2.0 manifest seen as a ``flash_manifest.json``
(:class:`~flash_runtime.manifest.Manifest`), so the platform and the worker handle one shape.
The result says where it came from (``manifest.CONVERTED_FROM``), which is how the worker knows to load
2.0 handles rather than 1.x functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import msgspec

from .errors import ManifestError

APP_MANIFEST_NAME = "runpod_manifest.json"
ENV_DIR = "env"  # the artifact's vendored packages
FORMAT = "runpod-apps"  # Manifest.extra[CONVERTED_FROM] of a converted manifest


class AppRoute(msgspec.Struct, kw_only=True):
    method: str
    path: str
    handler: str


class AppResource(msgspec.Struct, kw_only=True, rename="camel"):
    kind: Literal["queue", "api", "task"]
    name: str
    module: str = ""
    qualname: str = ""
    routes: list[AppRoute] = msgspec.field(default_factory=list)
    asgi_factory: str | None = None
    max_concurrency: int = 1
    workers_min: int = 0
    workers_max: int = 3
    idle_timeout: int = 60
    execution_timeout_ms: int = 0
    scaler_type: str | None = None
    scaler_value: int | None = None
    gpus: list[str] | None = None
    gpu_count: int = 1
    instance_ids: list[str] | None = None
    env: dict[str, str] | None = None
    dependencies: list[str] | None = None
    system_dependencies: list[str] | None = None
    mounts: list[dict[str, Any]] | None = None
    image_name: str | None = None


class AppManifest(msgspec.Struct, kw_only=True, rename="camel"):
    resources: list[AppResource]
    version: int = 1
    app: str = ""
    python_version: str | None = None
    excluded_packages: list[str] | None = None

    def resource(self, name: str) -> AppResource:
        for resource in self.resources:
            if resource.name == name:
                return resource
        known = ", ".join(sorted(r.name for r in self.resources)) or "none"
        raise ManifestError(
            f"resource {name!r} is not in the app's manifest (it has: {known}); check "
            "FLASH_RESOURCE_NAME"
        )


def is_app_manifest(raw: Any) -> bool:
    """Whether decoded JSON is a 2.0 manifest (a ``resources`` list) rather than a 1.x one."""
    return isinstance(raw, dict) and isinstance(raw.get("resources"), list)


def from_builtins(raw: Any, source: str = APP_MANIFEST_NAME) -> AppManifest:
    try:
        manifest = msgspec.convert(raw, AppManifest)
    except msgspec.ValidationError as err:
        raise ManifestError(f"{source}: {err}") from None
    problems = []
    seen: set[str] = set()
    for i, resource in enumerate(manifest.resources):
        where = f"`$.resources[{i}]` ({resource.name})"
        if resource.name in seen:
            problems.append(f"{where}: the name is used twice")
        seen.add(resource.name)
        if not resource.module or not resource.qualname:
            problems.append(f"{where}: no module/qualname (where the worker finds it)")
        if resource.kind == "api" and not resource.routes and not resource.asgi_factory:
            problems.append(f"{where}: an api resource needs routes or asgiFactory")
        if resource.workers_min > resource.workers_max:
            problems.append(
                f"{where}: workersMin {resource.workers_min} exceeds workersMax "
                f"{resource.workers_max}"
            )
    if problems:
        raise ManifestError(f"{source}: invalid manifest: " + "; ".join(problems))
    return manifest


def load(path: Path) -> AppManifest:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ManifestError(f"{path}: cannot read the app's manifest ({err.strerror})") from None
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as err:
        raise ManifestError(f"{path}: not valid JSON ({err})") from None
    return from_builtins(raw, str(path))


def as_flash_manifest(app: AppManifest) -> Any:
    """The 2.0 manifest as a :class:`~flash_runtime.manifest.Manifest`: one resource per queue
    and api resource, each with one function entry (``name`` the qualname) whose HTTP route, for
    an api resource, is its first route (routes themselves are read from the 2.0 manifest).
    Tasks have no endpoint and are left out."""
    from . import manifest as flash

    resources = {}
    for res in app.resources:
        if res.kind == "task":
            continue
        lb = res.kind == "api"
        first = res.routes[0] if res.routes else None
        entry = flash.FunctionEntry(
            name=res.qualname,
            module=res.module,
            is_class=bool(res.routes),
            http_method=(first.method if first else "GET") if lb else None,
            http_path=(first.path if first else "/") if lb else None,
        )
        resources[res.name] = flash.Resource(
            functions=[entry],
            is_load_balanced=lb,
            max_concurrency=res.max_concurrency,
            workersMin=res.workers_min,
            workersMax=res.workers_max,
            idleTimeout=res.idle_timeout,
            executionTimeoutMs=res.execution_timeout_ms,
            instanceIds=res.instance_ids,
            gpuIds=",".join(res.gpus) if res.gpus else None,
            env=res.env,
            dependencies=res.dependencies,
            systemDependencies=res.system_dependencies,
            imageName=res.image_name,
        )
        flash._derive(resources[res.name])
    converted = flash.Manifest(
        resources=resources,
        python_version=app.python_version,
        project_name=app.app,
        image_target="flash",
    )
    converted.extra[flash.CONVERTED_FROM] = FORMAT
    converted.function_registry = {r.functions[0].name: n for n, r in resources.items()}
    return converted


def serving_view(raw: dict[str, Any]) -> dict[str, Any]:
    """A stored manifest (either format) as ``flash_manifest.json`` data: a 1.x one as it is, a
    2.0 one converted (with the platform's own ``resources_endpoints`` carried over)."""
    if not is_app_manifest(raw):
        return raw
    from . import manifest as flash

    view = flash.to_builtins(as_flash_manifest(from_builtins(raw)))
    if "resources_endpoints" in raw:
        view["resources_endpoints"] = raw["resources_endpoints"]
    return view
