"""``flash deploy``: build, upload, release the build to an environment, provision its endpoints.

The steps, all through :class:`~.client.ControlPlaneClient` (Runpod's API, whichever platform):

1. build the project (``flash_runtime.pack.build``);
2. find or create the app, then the environment;
3. plan: compare each manifest resource with the environment's endpoints and with the config
   recorded for them by the previous deploy (``configHash`` in the build manifest);
4. upload the tarball to a presigned URL and finalize it into a build;
5. deploy the build to the environment (its workers roll onto it, jobs in flight are kept);
6. reconcile: create new endpoints, update changed ones, delete removed ones, leave unchanged
   ones untouched;
7. record each endpoint's id, config hash and URL in the build's manifest
   (``resources_endpoints``, which cross-endpoint discovery reads) and in the local
   ``.flash/flash_manifest.json``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

from .. import manifest as manifest_mod
from ..errors import FlashError
from ..protocol.controlplane import ControlPlaneClient
from ..protocol.target import Target

if TYPE_CHECKING:
    from rich.console import Console

    from ..manifest import Manifest, Resource

DEFAULT_ENVIRONMENT = "production"
# `flash run` deploys to this environment, its endpoints named with LIVE_PREFIX (seed 000).
LIVE_ENVIRONMENT = "live"
LIVE_PREFIX = "live-"
Action = Literal["created", "updated", "unchanged"]


class DeployError(FlashError):
    """The deploy could not complete; the message says which step failed and why."""


@dataclass(frozen=True)
class DeployedEndpoint:
    """One endpoint of the deployed environment."""

    resource: str
    id: str
    type: str  # "qb" or "lb"
    url: str
    routes: list[str]  # "POST /process", ... (load-balanced endpoints)
    action: Action


@dataclass
class DeployResult:
    """What ``flash deploy`` did (``--json`` prints :meth:`to_json`)."""

    app: str
    app_id: str
    environment: str
    environment_id: str
    build_id: str
    endpoints: list[DeployedEndpoint]
    removed: list[str] = field(default_factory=list)  # resource names of deleted endpoints
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "app": self.app,
            "environment": self.environment,
            "build": self.build_id,
            "endpoints": [
                {
                    "resource": ep.resource,
                    "id": ep.id,
                    "type": ep.type,
                    "url": ep.url,
                    "routes": ep.routes,
                    "action": ep.action,
                }
                for ep in self.endpoints
            ],
            "removed": self.removed,
        }


def endpoint_input(
    resource_name: str,
    resource: Resource,
    *,
    app: str,
    environment: str,
    environment_id: str,
    api_key: str,
    name_prefix: str = "",
) -> dict[str, Any]:
    """The ``EndpointInput`` (Runpod's ``saveEndpoint`` shape) that runs ``resource``.

    The endpoint joins the environment through ``flashEnvironmentId`` and finds its resource in
    the artifact through ``FLASH_RESOURCE_NAME`` in the template env, as on Runpod. Endpoints
    that call other endpoints (``makes_remote_calls``) get the key to do it with
    (``RUNPOD_API_KEY``) and their environment's id (``FLASH_ENVIRONMENT_ID``). The endpoint is
    named ``name_prefix + resource_name`` (``flash run``: ``live-``).
    """
    env = dict(resource.env or {})
    env.update(
        FLASH_RESOURCE_NAME=resource_name,
        FLASH_APP=app,
        FLASH_ENV=environment,
        FLASH_ENDPOINT_TYPE=resource.endpoint_type,
    )
    if resource.makes_remote_calls:
        env.update(FLASH_ENVIRONMENT_ID=environment_id)
        env.setdefault("RUNPOD_API_KEY", api_key)
    if not resource.imageName:
        raise DeployError(
            f"resource {resource_name!r} has no imageName in the manifest; rebuild with "
            "`flash build`"
        )
    payload: dict[str, Any] = {
        "name": name_prefix + resource_name,
        "type": resource.endpoint_type.upper(),
        "flashEnvironmentId": environment_id,
        "template": {
            "name": f"{app}__{environment}__{resource_name}",
            "imageName": resource.imageName,
            "env": [{"key": k, "value": v} for k, v in sorted(env.items())],
            "containerDiskInGb": 64 if resource.is_gpu else 10,
            "dockerArgs": "",
        },
        "workersMin": resource.workersMin,
        "workersMax": resource.workersMax,
        "idleTimeout": resource.idleTimeout,
        "scalerType": resource.scalerType,
        "scalerValue": resource.scalerValue,
        "executionTimeoutMs": resource.executionTimeoutMs,
    }
    if resource.is_gpu:
        payload["gpuIds"] = resource.gpuIds or "ANY"
        payload["gpuCount"] = resource.gpuCount or 1
        if resource.minCudaVersion:
            payload["minCudaVersion"] = resource.minCudaVersion
    else:
        payload["instanceIds"] = list(resource.instanceIds or [])
    if resource.locations:
        payload["locations"] = resource.locations
    if resource.flashboot:
        payload["flashBootType"] = "FLASHBOOT"
    volume_ids = _volume_ids(resource.networkVolume)
    if len(volume_ids) == 1:
        payload["networkVolumeId"] = volume_ids[0]
    elif volume_ids:
        payload["networkVolumeIds"] = [{"networkVolumeId": v} for v in volume_ids]
    return payload


def _volume_ids(volume: dict[str, Any] | list[dict[str, Any]] | None) -> list[str]:
    volumes = volume if isinstance(volume, list) else [volume] if volume else []
    return [str(v["id"]) for v in volumes if v.get("id")]


def config_hash(payload: dict[str, Any]) -> str:
    """A digest of an endpoint's desired configuration (``EndpointInput`` without ``id``)."""
    wanted = {k: v for k, v in payload.items() if k != "id"}
    return hashlib.sha256(orjson.dumps(wanted, option=orjson.OPT_SORT_KEYS)).hexdigest()


def routes_of(manifest: Manifest, resource_name: str) -> list[str]:
    return sorted(manifest.routes.get(resource_name, {}))


@dataclass
class _Step:
    resource: str
    payload: dict[str, Any]
    hash: str
    existing_id: str | None
    unchanged: bool


class _Progress:
    """Step lines and an upload bar on a rich console; silent without one."""

    def __init__(self, console: Console | None) -> None:
        self.console = console

    @contextmanager
    def step(self, text: str) -> Iterator[None]:
        if self.console is None:
            yield
            return
        started = time.perf_counter()
        with self.console.status(f"{text}…"):
            yield
        self.console.print(
            f"[green]✓[/green] {text} [dim]{time.perf_counter() - started:.1f}s[/dim]"
        )

    def note(self, text: str) -> None:
        if self.console is not None:
            self.console.print(f"[dim]{text}[/dim]")

    @contextmanager
    def transfer(self, text: str, total: int) -> Iterator[Callable[[int], None] | None]:
        """A byte progress bar; yields the callback to report sent bytes with."""
        if self.console is None:
            yield None
            return
        from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

        started = time.perf_counter()
        columns = (f"{text}…", BarColumn(bar_width=30), DownloadColumn(), TransferSpeedColumn())
        with Progress(*columns, console=self.console, transient=True) as bar:
            task = bar.add_task(text, total=total)
            yield lambda sent: bar.advance(task, sent)
        self.console.print(
            f"[green]✓[/green] {text} [dim]{time.perf_counter() - started:.1f}s[/dim]"
        )


async def _find_or_create_app(
    client: ControlPlaneClient, name: str, progress: _Progress
) -> dict[str, Any]:
    for app in await client.list_apps():
        if app["name"] == name:
            return app
    progress.note(f"No app {name!r} yet: creating it")
    created = await client.create_app(name)
    return {**created, "flashEnvironments": []}


async def _find_or_create_environment(
    client: ControlPlaneClient, app: dict[str, Any], name: str, progress: _Progress
) -> dict[str, Any]:
    for env in app.get("flashEnvironments") or []:
        if env["name"] == name:
            return await client.environment(env["id"])
    progress.note(f"No environment {name!r} in app {app['name']!r} yet: creating it")
    created = await client.create_environment(app["id"], name)
    return await client.environment(created["id"])


def _plan(
    manifest: Manifest,
    environment: dict[str, Any],
    previous: dict[str, Any],
    *,
    app: str,
    api_key: str,
    name_prefix: str = "",
) -> tuple[list[_Step], list[dict[str, str]]]:
    """What to do with each resource, and the endpoints to delete."""
    existing: dict[str, str] = {}
    to_delete: list[dict[str, str]] = []
    for endpoint in environment.get("endpoints") or []:
        name = endpoint["name"]
        resource = name[len(name_prefix) :] if name.startswith(name_prefix) else None
        if resource is None or resource in existing or resource not in manifest.resources:
            to_delete.append(endpoint)
        else:
            existing[resource] = endpoint["id"]
    recorded = {
        name: resource.get("configHash")
        for name, resource in (previous.get("resources") or {}).items()
        if isinstance(resource, dict)
    }
    steps = []
    for name, resource in sorted(manifest.resources.items()):
        payload = endpoint_input(
            name,
            resource,
            app=app,
            environment=environment["name"],
            environment_id=environment["id"],
            api_key=api_key,
            name_prefix=name_prefix,
        )
        digest = config_hash(payload)
        existing_id = existing.get(name)
        unchanged = existing_id is not None and recorded.get(name) == digest
        steps.append(_Step(name, payload, digest, existing_id, unchanged))
    return steps, to_delete


def _endpoint_urls(
    manifest: Manifest,
    target: Target,
    done: dict[str, tuple[str, str | None]],
    recorded: dict[str, str],
) -> dict[str, str]:
    """Each endpoint's URL: as the control plane recorded it in the build manifest (the local
    platform does), else by the target's convention (Runpod's URLs follow from the id)."""
    urls = {}
    for name, (endpoint_id, _) in done.items():
        endpoint_type = manifest.resources[name].endpoint_type
        url = recorded.get(name) or target.endpoint_url(endpoint_id, endpoint_type)
        if url:
            urls[name] = url
    return urls


def _recorded_manifest(
    manifest: Manifest, done: dict[str, tuple[str, str | None]], urls: dict[str, str]
) -> dict[str, Any]:
    """The manifest with each endpoint's id, config hash (None: not applied yet) and URL."""
    data = manifest_mod.to_builtins(manifest)
    for name, (endpoint_id, digest) in done.items():
        resource = data["resources"][name]
        resource["endpointId"] = endpoint_id
        if digest is None:
            resource.pop("configHash", None)
        else:
            resource["configHash"] = digest
    data["resources_endpoints"] = urls
    return data


async def release(
    client: ControlPlaneClient,
    *,
    artifact: Path,
    manifest: Manifest,
    manifest_path: Path,
    app_name: str,
    environment_name: str = DEFAULT_ENVIRONMENT,
    console: Console | None = None,
    name_prefix: str = "",
) -> DeployResult:
    """Steps 2 to 7 for an artifact that is already built (``flash run`` calls this for each
    rebuild, with ``name_prefix="live-"``)."""
    started = time.perf_counter()
    progress = _Progress(console)
    target = client.target
    if not manifest.resources:
        raise DeployError("the manifest has no endpoints: nothing to deploy")

    with progress.step(f"Resolved app {app_name!r}, environment {environment_name!r}"):
        app = await _find_or_create_app(client, app_name, progress)
        environment = await _find_or_create_environment(client, app, environment_name, progress)
        previous: dict[str, Any] = {}
        if environment.get("activeBuildId"):
            previous = (await client.build(environment["activeBuildId"])).get("manifest") or {}
    steps, to_delete = _plan(
        manifest,
        environment,
        previous,
        app=app_name,
        api_key=target.api_key,
        name_prefix=name_prefix,
    )

    size = artifact.stat().st_size
    with progress.transfer(f"Uploaded the artifact ({size / 2**20:.1f} MB)", size) as sent:
        upload = await client.prepare_upload(app["id"], size)
        await client.upload(upload["uploadUrl"], artifact, sent)
        # Endpoints that keep their id are discoverable at once; their hashes are recorded
        # only once they have been saved.
        known: dict[str, tuple[str, str | None]] = {
            s.resource: (s.existing_id, None) for s in steps if s.existing_id
        }
        urls = _endpoint_urls(manifest, target, known, {})
        build = await client.finalize_upload(
            app["id"], upload["objectKey"], _recorded_manifest(manifest, known, urls)
        )

    with progress.step(f"Released build {build['id'][:8]} to {environment_name!r}"):
        await client.deploy_build(environment["id"], build["id"])

    done: dict[str, tuple[str, str | None]] = {}
    actions: dict[str, Action] = {}

    async def save(step: _Step) -> None:
        payload = (
            step.payload if step.existing_id is None else {**step.payload, "id": step.existing_id}
        )
        saved = await client.save_endpoint(payload)
        done[step.resource] = (saved["id"], step.hash)
        actions[step.resource] = "updated" if step.existing_id else "created"

    for step in steps:
        if step.unchanged and step.existing_id:
            done[step.resource] = (step.existing_id, step.hash)
            actions[step.resource] = "unchanged"
    changing = [s for s in steps if not s.unchanged]
    label = f"Provisioned {len(changing)} endpoint(s), deleted {len(to_delete)}"
    with progress.step(label):
        outcomes = await asyncio.gather(
            *(save(s) for s in changing),
            *(client.delete_endpoint(ep["id"]) for ep in to_delete),
            return_exceptions=True,
        )
        stored = (await client.build(build["id"])).get("manifest") or {}
        urls = _endpoint_urls(manifest, target, done, stored.get("resources_endpoints") or {})
        data = _recorded_manifest(manifest, done, urls)
        await client.update_build_manifest(build["id"], data)
    unknown = sorted(set(done) - set(urls))
    failures = [
        f"{name}: {outcome}"
        for name, outcome in zip(
            [s.resource for s in changing] + [ep["name"] for ep in to_delete], outcomes, strict=True
        )
        if isinstance(outcome, BaseException)
    ] + [f"{name}: the control plane reported no URL for it" for name in unknown]
    if failures:
        raise DeployError(
            f"build {build['id']} is released to {environment_name!r}, but some endpoints "
            "failed: " + "; ".join(failures) + ". Fix the cause and run `flash deploy` again."
        )
    manifest_mod.dump(manifest_mod.from_builtins(data, str(manifest_path)), manifest_path)

    endpoints = [
        DeployedEndpoint(
            resource=name,
            id=endpoint_id,
            type=manifest.resources[name].endpoint_type,
            url=data["resources_endpoints"][name],
            routes=routes_of(manifest, name),
            action=actions[name],
        )
        for name, (endpoint_id, _) in sorted(done.items())
    ]
    return DeployResult(
        app=app_name,
        app_id=app["id"],
        environment=environment_name,
        environment_id=environment["id"],
        build_id=build["id"],
        endpoints=endpoints,
        removed=sorted(ep["name"] for ep in to_delete),
        seconds=time.perf_counter() - started,
    )


def deploy(
    project_dir: Path,
    target: Target,
    *,
    app_name: str | None = None,
    environment_name: str = DEFAULT_ENVIRONMENT,
    exclude: Sequence[str] = (),
    no_deps: bool = False,
    image_repository: str | None = None,
    console: Console | None = None,
) -> DeployResult:
    """Build ``project_dir`` and deploy it to ``environment_name`` of ``app_name`` (default: the
    project directory's name, as the manifest's ``project_name``)."""
    from ..pack import build

    started = time.perf_counter()
    built = build(
        project_dir,
        exclude=exclude,
        no_deps=no_deps,
        image_repository=image_repository,
        console=console,
    )

    async def run() -> DeployResult:
        async with ControlPlaneClient(target) as client:
            return await release(
                client,
                artifact=built.artifact,
                manifest=built.manifest,
                manifest_path=built.manifest_path,
                app_name=app_name or built.manifest.project_name,
                environment_name=environment_name,
                console=console,
            )

    result = asyncio.run(run())
    result.seconds = time.perf_counter() - started
    return result
