"""``flash deploy``: build, upload, release the build to an environment, provision its endpoints.

The steps, all through :class:`~.client.ControlPlaneClient` (Runpod's API, whichever platform):

1. build the project (``flash_runtime.pack.build``);
2. find or create the app, then the environment;
3. plan: compare each manifest resource with the environment's endpoints and with the config
   recorded for them by the previous deploy (``configHash`` in the build manifest);
4. upload the tarball to a presigned URL and finalize it into a build;
5. deploy the build to the environment (the workers that start from now on run it);
6. reconcile: create new endpoints, update changed ones, delete removed ones (and the templates
   this deployer made for them), leave unchanged ones untouched. An update is Runpod's:
   ``saveEndpoint`` with the endpoint's ``templateId``, then ``saveTemplate`` on that template.
   The source fingerprint in every template's env (``_FLASH_SOURCE_FINGERPRINT``) makes a
   code-only change a template change, which is what makes Runpod roll the workers;
7. record each endpoint's id, config hash and URL in the build's manifest
   (``resources_endpoints``, which cross-endpoint discovery reads) and in the local
   ``.flash/flash_manifest.json``;
8. wait (``wait_s``, with progress) until each endpoint it changed has a ready worker of the new
   template, and fail, naming the endpoint and the last lines of its log, when one crashes at
   start.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import orjson

from .. import manifest as manifest_mod
from ..errors import FlashError
from ..protocol.controlplane import ControlPlaneClient, ControlPlaneError
from ..protocol.target import Target
from .manage import delete_endpoint, template_prefix

if TYPE_CHECKING:
    from rich.console import Console

    from ..manifest import Manifest, Resource

DEFAULT_ENVIRONMENT = "production"
# Set in every template's env: a code-only change changes the template, so Runpod rolls it.
FINGERPRINT_ENV = "_FLASH_SOURCE_FINGERPRINT"
# GPU endpoints need a driver for the image's CUDA (our GPU image is CUDA 12.8).
DEFAULT_MIN_CUDA_VERSION = "12.8"
# A NetworkVolume without a data centre is created in this one (the SDK's default).
DEFAULT_VOLUME_DATACENTER = "EU-RO-1"
# The data centres with Flash artifact storage: GPU endpoints are placed in them unless the
# resource (or RUNPOD_DEFAULT_LOCATIONS / RUNPOD_DEFAULT_DATACENTER) says otherwise.
FLASH_DATACENTERS = (
    "US-CA-2",
    "US-IL-1",
    "US-KS-2",
    "US-MO-1",
    "US-MO-2",
    "US-NC-2",
    "US-NE-1",
    "US-WA-1",
    "EU-CZ-1",
    "EU-RO-1",
    "EUR-NO-1",
)
# Env vars Runpod itself adds to a load-balanced endpoint's template: kept on template updates.
PLATFORM_TEMPLATE_ENV = ("PORT", "PORT_HEALTH")
DEFAULT_WAIT_S = 600.0
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
    # What the platform said about where its workers run (the local platform's notices: an
    # image environment made, a system package or GPU this machine lacks).
    notices: list[str] = field(default_factory=list)


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
                    "notices": ep.notices,
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
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """The ``EndpointInput`` (Runpod's ``saveEndpoint`` shape) that creates ``resource``.

    The endpoint joins the environment through ``flashEnvironmentId`` and finds its resource in
    the artifact through ``FLASH_RESOURCE_NAME`` in the template env, as on Runpod. Endpoints
    that call other endpoints (``makes_remote_calls``) get the key to do it with
    (``RUNPOD_API_KEY``) and their environment's id (``FLASH_ENVIRONMENT_ID``). The endpoint is
    named ``name_prefix + resource_name`` (``flash run``: ``live-``); its template is named
    after the app, environment and resource plus a digest of the configuration, since template
    names are unique on Runpod.
    """
    env = dict(resource.env or {})
    env.update(
        FLASH_RESOURCE_NAME=resource_name,
        FLASH_APP=app,
        FLASH_ENV=environment,
        FLASH_ENDPOINT_TYPE=resource.endpoint_type,
    )
    if fingerprint:
        env[FINGERPRINT_ENV] = fingerprint
    if resource.makes_remote_calls:
        env.update(FLASH_ENVIRONMENT_ID=environment_id)
        env.setdefault("RUNPOD_API_KEY", api_key)
    if not resource.imageName:
        raise DeployError(
            f"resource {resource_name!r} has no imageName in the manifest; rebuild with "
            "`flash build`"
        )
    template: dict[str, Any] = {
        "imageName": resource.imageName,
        "env": [{"key": k, "value": v} for k, v in sorted(env.items())],
        "containerDiskInGb": resource.containerDiskInGb or (64 if resource.is_gpu else 10),
        "dockerArgs": resource.dockerArgs or "",
    }
    payload: dict[str, Any] = {
        "name": name_prefix + resource_name,
        "type": resource.endpoint_type.upper(),
        "flashEnvironmentId": environment_id,
        "template": template,
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
        payload["minCudaVersion"] = resource.minCudaVersion or DEFAULT_MIN_CUDA_VERSION
    else:
        payload["instanceIds"] = list(resource.instanceIds or [])
    locations = _locations(resource)
    if locations:
        payload["locations"] = locations
    if resource.flashboot:
        payload["flashBootType"] = "FLASHBOOT"
    volume_ids = [str(v["id"]) for v in resource.volumes if v.get("id")]
    if len(volume_ids) == 1:
        payload["networkVolumeId"] = volume_ids[0]
    elif volume_ids:
        payload["networkVolumeIds"] = [{"networkVolumeId": v} for v in volume_ids]
    digest = config_hash(payload)[:10]
    template["name"] = f"{template_prefix(app, environment)}{resource_name}__{digest}"
    return payload


def _locations(resource: Resource) -> str | None:
    """The resource's own locations; else RUNPOD_DEFAULT_LOCATIONS, RUNPOD_DEFAULT_DATACENTER;
    else, for GPU endpoints, the data centres with Flash artifact storage."""
    if resource.locations:
        return resource.locations
    chosen = os.environ.get("RUNPOD_DEFAULT_LOCATIONS") or os.environ.get(
        "RUNPOD_DEFAULT_DATACENTER"
    )
    if chosen:
        return chosen.strip()
    return ",".join(FLASH_DATACENTERS) if resource.is_gpu else None


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
    template_id: str | None = None  # the existing endpoint's template


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


async def _resolve_volumes(
    client: ControlPlaneClient, manifest: Manifest, progress: _Progress
) -> None:
    """Gives each ``NetworkVolume(name=...)`` of the manifest the id of the account's volume of
    that name in that data centre, creating it when there is none (Runpod's REST API)."""
    wanted = [
        volume
        for resource in manifest.resources.values()
        for volume in resource.volumes
        if not volume.get("id") and volume.get("name")
    ]
    if not wanted:
        return
    existing = await client.network_volumes()
    for volume in wanted:
        data_center = str(volume.get("dataCenterId") or DEFAULT_VOLUME_DATACENTER)
        found = next(
            (
                v
                for v in existing
                if v.get("name") == volume["name"] and v.get("dataCenterId") == data_center
            ),
            None,
        )
        if found is None:
            found = await client.create_network_volume(
                str(volume["name"]), int(volume.get("size") or 100), data_center
            )
            existing.append(found)
            progress.note(f"created network volume {volume['name']!r} ({found['id']})")
        volume["id"] = found["id"]
    for resource in manifest.resources.values():
        if resource.volumes and resource.networkVolumes is None:
            resource.networkVolumes = resource.volumes  # the older single-volume key, upgraded


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
    existing: dict[str, dict[str, str]] = {}
    to_delete: list[dict[str, str]] = []
    for endpoint in environment.get("endpoints") or []:
        name = endpoint["name"]
        resource = name[len(name_prefix) :] if name.startswith(name_prefix) else None
        if resource is None or resource in existing or resource not in manifest.resources:
            to_delete.append(endpoint)
        else:
            existing[resource] = endpoint
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
            fingerprint=manifest.source_fingerprint,
        )
        digest = config_hash(payload)
        found = existing.get(name) or {}
        existing_id = found.get("id")
        unchanged = existing_id is not None and recorded.get(name) == digest
        steps.append(_Step(name, payload, digest, existing_id, unchanged, found.get("templateId")))
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
    wait_s: float | None = None,
) -> DeployResult:
    """Steps 2 to 8 for an artifact that is already built (``flash run`` calls this for each
    rebuild, with ``name_prefix="live-"``; it watches the workers itself). ``wait_s`` None skips
    step 8."""
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
    await _resolve_volumes(client, manifest, progress)
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
        if step.existing_id is None:
            saved = await client.save_endpoint(step.payload)
        else:
            saved = await _update_endpoint(client, step)
        done[step.resource] = (saved["id"], step.hash)
        actions[step.resource] = "updated" if step.existing_id else "created"

    async def delete(endpoint: dict[str, str]) -> None:
        await delete_endpoint(client, endpoint, template_prefix(app_name, environment_name))

    for step in steps:
        if step.unchanged and step.existing_id:
            done[step.resource] = (step.existing_id, step.hash)
            actions[step.resource] = "unchanged"
    changing = [s for s in steps if not s.unchanged]
    label = f"Provisioned {len(changing)} endpoint(s), deleted {len(to_delete)}"
    with progress.step(label):
        outcomes = await asyncio.gather(
            *(save(s) for s in changing),
            *(delete(ep) for ep in to_delete),
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
    notices: dict[str, list[str]] = {}
    if wait_s is not None:
        changed = {name: done[name][0] for name, action in actions.items() if action != "unchanged"}
        notices = await _wait_ready(client, changed, manifest, wait_s, progress)

    endpoints = [
        DeployedEndpoint(
            resource=name,
            id=endpoint_id,
            type=manifest.resources[name].endpoint_type,
            url=data["resources_endpoints"][name],
            routes=routes_of(manifest, name),
            action=actions[name],
            notices=notices.get(name, []),
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


async def _update_endpoint(client: ControlPlaneClient, step: _Step) -> dict[str, Any]:
    """Runpod's update path: the endpoint's settings with its own ``templateId`` (never an
    inline template: its name would be taken), then the template itself, in place. The template
    is saved only when it differs, since saving it rolls the workers."""
    wanted: dict[str, Any] = step.payload["template"]
    update = {k: v for k, v in step.payload.items() if k != "template"}
    update["id"] = step.existing_id
    if step.template_id:
        update["templateId"] = step.template_id
    saved = await client.save_endpoint(update)
    template_id = saved.get("templateId") or step.template_id
    if not template_id:
        raise DeployError(f"endpoint {step.existing_id} has no template to update")
    live = await client.template(template_id)
    env = {kv["key"]: kv["value"] for kv in wanted["env"]}
    for kv in live.get("env") or []:
        if kv["key"] in PLATFORM_TEMPLATE_ENV:
            env.setdefault(kv["key"], kv["value"])
    template = {
        "id": template_id,
        "name": live.get("name") or wanted["name"],
        "imageName": wanted["imageName"],
        "env": [{"key": k, "value": v} for k, v in sorted(env.items())],
        "containerDiskInGb": wanted["containerDiskInGb"],
        "dockerArgs": wanted["dockerArgs"],
        "volumeInGb": 0,
    }
    same = (
        live.get("imageName") == template["imageName"]
        and live.get("containerDiskInGb") == template["containerDiskInGb"]
        and (live.get("dockerArgs") or "") == template["dockerArgs"]
        and sorted((kv["key"], kv["value"]) for kv in live.get("env") or []) == sorted(env.items())
    )
    if not same:
        await client.save_template(template)
    return saved


async def _wait_ready(
    client: ControlPlaneClient,
    endpoints: dict[str, str],
    manifest: Manifest,
    wait_s: float,
    progress: _Progress,
) -> dict[str, list[str]]:
    """Step 8: polls each endpoint's ``/health`` until it has a ready worker of its current
    template and none booting (the local platform's ``booting``), failing on a crash at start
    (``lastError``) or after ``wait_s``. Returns the platform's notices per endpoint."""
    notices: dict[str, list[str]] = {}
    if not endpoints:
        return notices
    on_runpod = client.target.platform == "runpod"
    pending = dict(endpoints)
    if on_runpod:
        # On Runpod an endpoint with workersMin 0 starts no worker before its first request.
        for name in [n for n in pending if manifest.resources[n].workersMin == 0]:
            progress.note(f"{name}: not checked (workersMin 0: no worker starts before a request)")
            del pending[name]
    deadline = time.monotonic() + wait_s
    failures: list[str] = []
    last: dict[str, dict[str, Any]] = {}  # each endpoint's last /health
    label = f"Workers of {len(pending)} endpoint(s) ready"
    with progress.step(label):
        while pending:
            for name, endpoint_id in list(pending.items()):
                try:
                    health = await client.endpoint_health(endpoint_id)
                except ControlPlaneError as err:
                    if not on_runpod:
                        raise
                    # Runpod's health API may not serve every kind of endpoint: not a failure.
                    progress.note(f"{name}: not checked ({err})")
                    del pending[name]
                    continue
                last[name] = health
                if name not in notices and health.get("notices"):
                    notices[name] = [str(n) for n in health["notices"]]
                    for notice in notices[name]:
                        progress.note(f"{name}: {notice}")
                error = health.get("lastError")
                if error:
                    failures.append(_crash_report(name, endpoint_id, error))
                    del pending[name]
                elif _settled(health):
                    del pending[name]
            if not pending:
                break
            if time.monotonic() > deadline:
                failures += [
                    _not_ready_report(name, endpoint_id, wait_s, last.get(name, {}))
                    for name, endpoint_id in pending.items()
                ]
                break
            await asyncio.sleep(0.25)
    if failures:
        raise DeployError(
            "the build is released, but " + "\n".join(failures) + "\nFix the cause and run "
            "`flash deploy` again (`--no-wait` skips this check)."
        )
    return notices


def _settled(health: dict[str, Any]) -> bool:
    """No worker of the endpoint is still to come: on the local platform, whose ``/health``
    says whether workers of the current template are ``booting``, when none is; on Runpod, once
    a worker is ready and none initializing."""
    workers = health.get("workers") or {}
    if workers.get("initializing"):
        return False
    if "booting" in health:
        return not health["booting"]
    return bool(workers.get("ready"))


def _not_ready_report(name: str, endpoint_id: str, wait_s: float, health: dict[str, Any]) -> str:
    """Why an endpoint is still not ready when the wait ends: what the local platform says of
    its workers still starting (how long, the last answer of their ``/ping``, their log)."""
    lines = [f"{name} ({endpoint_id}): no worker was ready after {wait_s:g}s"]
    for worker in health.get("startingWorkers") or []:
        line = f"  worker {worker.get('id')}: starting for {worker.get('startedSecondsAgo')}s"
        ping = worker.get("lastPing")
        if ping == "204":
            line += "; its /ping last answered 204 (still loading its code)"
        elif ping:
            line += f"; its /ping last answered {ping}"
        else:
            line += "; it has neither answered a /ping nor asked for a job yet"
        if worker.get("log"):
            line += f"; log: {worker['log']}"
        lines.append(line)
    return "\n".join(lines)


def _crash_report(name: str, endpoint_id: str, error: dict[str, Any]) -> str:
    when = "before it was ready" if error.get("beforeReady") else "after it was ready"
    lines = [f"endpoint {name!r} ({endpoint_id}): its worker exited {when}"]
    if error.get("exitCode") is not None:
        lines[0] += f" with code {error['exitCode']}"
    if error.get("message"):
        lines.append(f"  {error['message']}")
    tail = error.get("lastLines") or []
    if tail:
        lines.append(
            "  last lines of its log" + (f" ({error['log']})" if error.get("log") else "") + ":"
        )
        lines += [f"    {line}" for line in tail[-15:]]
    return "\n".join(lines)


def deploy(
    project_dir: Path,
    target: Target,
    *,
    app_name: str | None = None,
    environment_name: str = DEFAULT_ENVIRONMENT,
    exclude: Sequence[str] = (),
    no_deps: bool = False,
    image_repository: str | None = None,
    python_version: str | None = None,
    output: Path | None = None,
    console: Console | None = None,
    wait_s: float | None = DEFAULT_WAIT_S,
) -> DeployResult:
    """Build ``project_dir`` and deploy it to ``environment_name`` of ``app_name`` (default: the
    project directory's name, as the manifest's ``project_name``), then wait up to ``wait_s``
    for the changed endpoints' workers (None: do not wait)."""
    from ..pack import build

    started = time.perf_counter()
    built = build(
        project_dir,
        output=output,
        exclude=exclude,
        no_deps=no_deps,
        python_version=python_version,
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
                wait_s=wait_s,
            )

    result = asyncio.run(run())
    result.seconds = time.perf_counter() - started
    return result
