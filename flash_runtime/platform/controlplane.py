"""The control plane: Runpod's Flash GraphQL API at ``/graphql``, on the local platform.

It keeps apps, environments, builds and endpoints in the platform database and decides *what*
runs; the runtime (``model.Runtime``) makes it run. Saving an endpoint applies it to the runtime;
deleting one removes it; deploying a build to an environment rolls that environment's endpoints
onto the build. Each environment is changed under its own lock, so concurrent deploys to one
environment queue up and environments never affect each other.

The schema is ``schema.graphql`` (one SDL file); resolvers are bound to it here. Requests need
``Authorization: Bearer <platform key>`` (or Runpod's ``?api_key=``); errors come back in the
standard ``{"errors": [...]}`` shape with a message saying what to do.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, cast

import orjson
from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    build_schema,
    execute,
    parse,
    validate,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .. import appmanifest
from .. import manifest as manifest_schema
from ..errors import FlashError, ManifestError
from ..pack.builder import max_artifact_bytes
from ..protocol.local import PlatformConfig
from . import rest2, tls, volumes
from .controlplane_store import (
    App,
    Build,
    ControlPlaneStore,
    Endpoint,
    Environment,
    Template,
    runpod_id,
)
from .model import EndpointSpec, Runtime
from .pods import PodError
from .secretstore import Secret, SecretError
from .serverless import ApiError, bearer_ok, read_body
from .uploads import (
    UPLOAD_TTL_SECONDS,
    download_url,
    purge_expired_uploads,
    remove_artifact_if_unused,
    upload_routes,
    upload_url,
)
from .volumes import attached_volume

log = logging.getLogger(__name__)

SCHEMA_PATH = Path(__file__).with_name("schema.graphql")
# What one request may ask (a document runs on the event loop: a huge one would stall the whole
# platform). The deployer's largest document is far below each.
MAX_BODY_BYTES = 16 * 2**20  # manifests travel in the body
MAX_DEPTH = 10  # nested selections
MAX_ALIASES = 30
MAX_FIELDS = 500  # fields selected in all, fragments expanded
MAX_TOKENS = 10_000  # parsing stops past this: a huge document costs nothing to refuse
ENDPOINT_TYPES = ("QB", "LB")
KEEP_BUILDS = 5  # per app, besides the builds in use
SCALER_TYPES = ("QUEUE_DELAY", "REQUEST_COUNT")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
# EndpointInput fields kept as given (the rest are columns or the template).
_SETTINGS = (
    "gpuIds",
    "gpuCount",
    "instanceIds",
    "workersMin",
    "workersMax",
    "workersStandby",
    "workersPFBTarget",
    "idleTimeout",
    "scalerType",
    "scalerValue",
    "executionTimeoutMs",
    "locations",
    "networkVolumeId",
    "networkVolumeIds",
    "minCudaVersion",
    "allowedCudaVersions",
    "flashBootType",
)


class OperationError(Exception):
    """An operation the control plane refuses or cannot complete; the message goes to the
    client as is, so it says what was wrong and what to do."""


@cache
def _sdl() -> str:
    return SCHEMA_PATH.read_text()


def _iso(unix_time: float) -> str:
    return (
        datetime.fromtimestamp(unix_time, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    )


def _check_name(kind: str, name: str) -> str:
    name = name.strip()
    if not name or len(name) > 64 or not set(name) <= _NAME_CHARS or name[0] not in _ALNUM:
        raise OperationError(
            f"invalid {kind} name {name!r}: use 1 to 64 letters, digits, '-', '_' or '.', "
            "beginning with a letter or a digit"
        )
    return name


def _cost(document: DocumentNode) -> str | None:
    """Why the document asks too much (depth, aliases, fields), or None. Fragments are counted
    where they are spread, so reusing one does not hide its cost."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    fields = aliases = deepest = 0

    def walk(selections: Any, depth: int, seen: frozenset[str]) -> None:
        nonlocal fields, aliases, deepest
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH or fields > MAX_FIELDS or aliases > MAX_ALIASES:
            return
        for node in selections or ():
            if isinstance(node, FieldNode):
                fields += 1
                aliases += node.alias is not None
                if node.selection_set is not None:
                    walk(node.selection_set.selections, depth + 1, seen)
            elif isinstance(node, InlineFragmentNode):
                walk(node.selection_set.selections, depth, seen)
            elif isinstance(node, FragmentSpreadNode) and node.name.value not in seen:
                fragment = fragments.get(node.name.value)
                if fragment is not None:
                    walk(fragment.selection_set.selections, depth, seen | {node.name.value})

    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode):
            walk(definition.selection_set.selections, 1, frozenset())
    if deepest > MAX_DEPTH:
        return f"the query nests deeper than {MAX_DEPTH} levels"
    if aliases > MAX_ALIASES:
        return f"the query uses more than {MAX_ALIASES} aliases"
    if fields > MAX_FIELDS:
        return f"the query selects more than {MAX_FIELDS} fields"
    return None


class ControlPlane:
    """The control plane's operations; the GraphQL resolvers are thin wrappers around them."""

    def __init__(self, db: sqlite3.Connection, runtime: Runtime, config: PlatformConfig) -> None:
        self.store = ControlPlaneStore(db)
        self.runtime = runtime
        self.config = config
        self._locks: dict[str, asyncio.Lock] = {}

    def _lock(self, environment_id: str) -> asyncio.Lock:
        return self._locks.setdefault(environment_id, asyncio.Lock())

    # lookups that fail with a message naming what is missing

    def app(self, app_id: str) -> App:
        app = self.store.app(app_id)
        if app is None:
            raise OperationError(f"app not found: no app has id {app_id!r}")
        return app

    def app_by_name(self, name: str) -> App:
        app = self.store.app_by_name(name)
        if app is None:
            raise OperationError(
                f"app not found: no app is named {name!r} (`flash app list` shows the apps)"
            )
        return app

    def environment(self, environment_id: str) -> Environment:
        env = self.store.environment(environment_id)
        if env is None:
            raise OperationError(f"environment not found: no environment has id {environment_id!r}")
        return env

    def environment_by_name(self, app_id: str, name: str) -> Environment:
        app = self.app(app_id)
        env = self.store.environment_by_name(app_id, name)
        if env is None:
            raise OperationError(
                f"environment not found: app {app.name!r} has no environment {name!r}"
            )
        return env

    def build(self, build_id: str) -> Build:
        build = self.store.build(build_id)
        if build is None:
            raise OperationError(f"build not found: no build has id {build_id!r}")
        return build

    def endpoint(self, endpoint_id: str) -> Endpoint:
        endpoint = self.store.endpoint(endpoint_id)
        if endpoint is None:
            raise OperationError(f"endpoint not found: no endpoint has id {endpoint_id!r}")
        return endpoint

    # apps and environments

    def create_app(self, name: str) -> App:
        name = _check_name("app", name)
        if self.store.app_by_name(name) is not None:
            raise OperationError(f"an app named {name!r} already exists")
        return self.store.create_app(name)

    async def delete_app(self, app_id: str) -> bool:
        self.app(app_id)
        for env in self.store.environments(app_id):
            await self.delete_environment(env.id)
        artifacts = {build.artifact for build in self.store.builds(app_id)}
        self.store.delete_app(app_id)
        for name in artifacts:
            remove_artifact_if_unused(self.store, self.config, name)
        return True

    def create_environment(self, app_id: str, name: str) -> Environment:
        app = self.app(app_id)
        name = _check_name("environment", name)
        if self.store.environment_by_name(app_id, name) is not None:
            raise OperationError(f"app {app.name!r} already has an environment {name!r}")
        return self.store.create_environment(app_id, name)

    async def delete_environment(self, environment_id: str) -> bool:
        env = self.environment(environment_id)
        app = self.app(env.app_id)
        async with self._lock(environment_id):
            for endpoint in self.store.endpoints(environment_id):
                await self._remove(endpoint)
            self.store.delete_environment(environment_id)
            # Its volumes' data here is its own (volumes.py): it goes with it.
            volumes.delete_environment_data(self.config, app.name, env.name)
        self._locks.pop(environment_id, None)
        return True

    # artifacts and builds

    def prepare_upload(self, app_id: str, size: int, base_url: str) -> dict[str, Any]:
        self.app(app_id)
        limit = max_artifact_bytes()
        if size <= 0:
            raise OperationError(f"tarballSize must be a positive number of bytes, not {size}")
        if size > limit:
            raise OperationError(
                f"the artifact is {size / 2**20:.1f} MB, over the {limit / 2**20:.0f} MB limit "
                "(FLASH_MAX_ARTIFACT_MB); leave packages out with `--exclude`"
            )
        purge_expired_uploads(self.store, self.config)
        object_key = f"flash/{app_id}/{uuid.uuid4().hex}.tar.gz"
        expires_at = time.time() + UPLOAD_TTL_SECONDS
        token = self.store.create_upload(app_id, object_key, size, expires_at)
        return {
            "uploadUrl": upload_url(base_url, token),
            "objectKey": object_key,
            "expiresAt": _iso(expires_at),
        }

    def finalize_upload(self, app_id: str, object_key: str, manifest: Any) -> Build:
        self.app(app_id)
        upload = self.store.upload_by_key(object_key)
        if upload is None or upload.app_id != app_id:
            raise OperationError(
                f"no pending upload {object_key!r} for this app; call "
                "prepareFlashArtifactUpload, PUT the tarball to its uploadUrl, then finalize"
            )
        if not upload.artifact:
            raise OperationError(
                f"nothing has been uploaded for {object_key!r} yet: PUT the tarball to the "
                "uploadUrl first"
            )
        build = self.store.create_build(upload, _valid_manifest(manifest))
        self._collect_builds(app_id)
        return build

    def _collect_builds(self, app_id: str) -> None:
        """Keeps an app's newest KEEP_BUILDS builds and every build in use; deletes the rest
        with their artifacts, so that redeploying does not fill the disk."""
        in_use = self.store.builds_in_use(app_id)
        for build in self.store.builds(app_id)[KEEP_BUILDS:]:
            if build.id not in in_use:
                self.store.delete_build(build.id)
                remove_artifact_if_unused(self.store, self.config, build.artifact)

    def update_build_manifest(self, build_id: str, manifest: Any) -> Build:
        self.build(build_id)
        self.store.set_build_manifest(build_id, _valid_manifest(manifest))
        return self.build(build_id)

    async def deploy_build(self, environment_id: str, build_id: str) -> Environment:
        env = self.environment(environment_id)
        build = self.build(build_id)
        if build.app_id != env.app_id:
            raise OperationError(
                f"build {build_id} belongs to another app than environment {env.name!r}"
            )
        self._check_python(build)
        async with self._lock(environment_id):
            self.environment(environment_id)  # still there after waiting for the lock
            self.store.set_environment_state(environment_id, "deploying", build_id)
            # Endpoints whose resource the new build lacks keep their build: the deployer
            # deletes them next, and their next workers could not boot on this one. The others
            # run it from their next worker on (running workers are not restarted: see
            # ``deployBuildToEnvironment`` in the schema).
            rolling = [
                ep
                for ep in self.store.endpoints(environment_id)
                if ep.resource_name in build.resources
            ]
            try:
                await asyncio.gather(*(self._apply(ep, build) for ep in rolling))
            except Exception:
                self.store.set_environment_state(environment_id, "failed")
                raise
            for ep in rolling:
                self.store.set_endpoint_build(ep.id, build_id)
            self.store.set_environment_state(environment_id, "deployed")
        return self.environment(environment_id)

    def active_artifact(self, env: Environment, base_url: str) -> dict[str, Any] | None:
        if not env.active_build_id:
            return None
        build = self.build(env.active_build_id)
        url, expires = download_url(base_url, build.object_key, self.config.api_key)
        return {"objectKey": build.object_key, "downloadUrl": url, "expiresAt": _iso(expires)}

    # endpoints

    async def save_endpoint(self, data: dict[str, Any]) -> Endpoint:
        existing = self.endpoint(data["id"]) if data.get("id") else None
        env_id = data.get("flashEnvironmentId") or (existing.environment_id if existing else None)
        if not env_id:
            raise OperationError(
                "flashEnvironmentId is required: the local platform runs Flash endpoints only "
                "(deploy them with `flash deploy`)"
            )
        if existing and existing.environment_id != env_id:
            raise OperationError(
                f"endpoint {existing.id} belongs to another environment; an endpoint cannot "
                "move between environments (delete it and create a new one)"
            )
        env = self.environment(env_id)
        if not env.active_build_id:
            raise OperationError(
                f"environment {env.name!r} has no build yet: deploy one to it "
                "(deployBuildToEnvironment) before saving its endpoints"
            )
        build = self.build(env.active_build_id)
        self._check_python(build)
        name = _check_name("endpoint", data["name"])
        template = self._template_for(data, existing, name)
        resource_name = self._resource_for(name, template.env, build)
        endpoint_type = self._type_for(data, template.env, build, resource_name)
        settings = _settings(data)
        if data.get("volumes"):
            raise OperationError(
                "global volumes (`volumes`, OBJECT_STORE_VOLUME) are not available on the local "
                "platform; mount a NetworkVolume at /runpod-volume instead"
            )
        volume_id = attached_volume(settings)
        if volume_id is not None and self.store.volume(volume_id) is None:
            raise OperationError(
                f"network volume {volume_id!r} does not exist: create it first (REST POST "
                "/v1/networkvolumes; `flash deploy` does for NetworkVolume(name=...))"
            )

        async with self._lock(env_id):
            self.environment(env_id)  # still there after waiting for the lock
            created = replaced = None
            if not template.id:  # an inline template: saved with the endpoint, or not at all
                created = template = self._create_template(template.to_input())
            elif data.get("template") is not None:  # the endpoint's own, replaced in place
                replaced = self.store.template(template.id)
                self.store.update_template(template)
            self.store.set_environment_state(env_id, "updating")
            endpoint = self.store.save_endpoint(
                existing.id if existing else None,
                environment_id=env_id,
                build_id=build.id,
                name=name,
                resource_name=resource_name,
                type=endpoint_type,
                template_id=template.id,
                settings=settings,
            )
            try:
                await self._apply(endpoint, build)
            except Exception:
                if existing is None:
                    self.store.delete_endpoint(endpoint.id)
                    if created is not None:
                        self.store.delete_template(created.id)
                elif replaced is not None:
                    self.store.update_template(replaced)
                self.store.set_environment_state(env_id, "failed")
                raise
            self.store.set_environment_state(env_id, "deployed")
        return endpoint

    async def delete_endpoint(self, endpoint_id: str) -> bool:
        endpoint = self.endpoint(endpoint_id)
        env_id = endpoint.environment_id
        async with self._lock(env_id):
            self.endpoint(endpoint_id)  # still there after waiting for the lock
            self.store.set_environment_state(env_id, "updating")
            await self._remove(endpoint)
            self.store.set_environment_state(env_id, "deployed")
        return True

    async def resume(self) -> None:
        """Applies every stored endpoint to the runtime again (after a platform restart); an
        endpoint that cannot run fails its environment, and the others still start."""
        for endpoint in self.store.endpoints():
            try:
                await self._apply(endpoint, self.build(endpoint.build_id))
            except OperationError:
                self.store.set_environment_state(endpoint.environment_id, "failed")

    def _template_for(self, data: dict[str, Any], existing: Endpoint | None, name: str) -> Template:
        """The endpoint's template: an existing one (``templateId``, else the endpoint's), or an
        inline one not saved yet (its ``id`` empty; its name checked to be free)."""
        inline, template_id = data.get("template"), data.get("templateId")
        if inline is not None and template_id:
            raise OperationError(
                "give either `template` (a new template) or `templateId` (an existing one), not "
                "both; Runpod refuses an endpoint input with both"
            )
        if inline is not None:
            body = dict(inline)
            own = self.store.template(existing.template_id) if existing else None
            shared = own is not None and any(
                ep.template_id == own.id and ep.id != existing.id  # type: ignore[union-attr]
                for ep in self.store.endpoints()
            )
            if own is not None and not shared and body.get("name") in (None, own.name):
                # An update giving the endpoint's own template again (by its name, or none):
                # it is replaced in place, and the endpoint's workers roll onto it (how the
                # Runpod SDK 2.0 redeploys: same template name, a new RUNPOD_BUILD_ID).
                return Template.from_input(own.id, {**body, "name": own.name})
            body["name"] = body.get("name") or f"{name}__{runpod_id(8)}"
            self._check_template_name(body["name"], None)
            return Template.from_input("", body)
        template_id = template_id or (existing.template_id if existing else None)
        if not template_id:
            raise OperationError(
                "an endpoint needs a template: give `template` (image and env) or `templateId`"
            )
        template = self.store.template(template_id)
        if template is None:
            raise OperationError(f"template not found: no template has id {template_id!r}")
        return template

    def _check_template_name(self, name: str, template_id: str | None) -> None:
        holder = self.store.template_named(name)
        if holder is not None and holder.id != template_id:
            raise OperationError(
                f"a template named {name!r} already exists (template {holder.id}); template "
                "names are unique: change that one with saveTemplate(input: {id: ...}), or give "
                "the new one another name"
            )

    def _create_template(self, body: dict[str, Any]) -> Template:
        self._check_template_name(str(body.get("name") or ""), None)
        return self.store.create_template(body)

    def _check_python(self, build: Build) -> None:
        """Refuses a build whose Python the platform cannot run workers on: its workers would
        crash at every start."""
        version = str(build.serving.get("python_version") or "")
        runnable = self.runtime.python_versions
        if version and version not in runnable:
            available = ", ".join(sorted(runnable))
            raise OperationError(
                f"build {build.id} is for Python {version}, and this platform runs workers on "
                f"Python {available} only; rebuild for {available} (the reference's "
                f"`flash build --python-version {min(runnable)}`, or `flash build` run by that "
                "Python)"
            )

    # templates

    def pod_template(self, template_id: str) -> Template:
        template = self.store.template(template_id)
        if template is None:
            raise OperationError(f"template not found: no template has id {template_id!r}")
        return template

    async def save_template(self, data: dict[str, Any]) -> Template:
        """Creates a template, or replaces one (``id``) and rolls the endpoints that use it."""
        name = str(data["name"]).strip()
        if not name:
            raise OperationError("a template needs a name")
        if not data.get("id"):
            return self._create_template({**data, "name": name})
        old = self.pod_template(data["id"])
        self._check_template_name(name, old.id)
        new = Template.from_input(old.id, {**data, "name": name})
        using = [ep for ep in self.store.endpoints() if ep.template_id == old.id]
        for ep in using:
            self._check_python(self.build(ep.build_id))
        self.store.update_template(new)
        for ep in using:
            async with self._lock(ep.environment_id):
                current = self.store.endpoint(ep.id)
                if current is None:
                    continue
                self.store.set_environment_state(ep.environment_id, "updating")
                try:
                    await self._apply(current, self.build(current.build_id))
                except Exception:
                    self.store.set_environment_state(ep.environment_id, "failed")
                    raise
                self.store.set_environment_state(ep.environment_id, "deployed")
        return new

    def delete_template(self, name: str) -> bool:
        template = self.store.template_named(name)
        if template is None:
            raise OperationError(f"template not found: no template is named {name!r}")
        users = [ep.name for ep in self.store.endpoints() if ep.template_id == template.id]
        if users:
            raise OperationError(
                f"template {name!r} is in use by endpoint(s) {', '.join(sorted(users))}: delete "
                "them first"
            )
        self.store.delete_template(template.id)
        return True

    # task pods (pods.py)

    async def deploy_pod(self, data: dict[str, Any], *, gpu: bool) -> dict[str, Any]:
        try:
            return await self.runtime.pods.deploy(data, gpu=gpu)
        except (PodError, FlashError) as err:
            raise OperationError(str(err)) from None

    # secrets (values written once, never read back: secretstore.py)

    def create_secret(self, data: dict[str, Any]) -> Secret:
        try:
            return self.runtime.secrets.create(
                str(data["name"]), str(data["value"]), str(data.get("description") or "")
            )
        except SecretError as err:
            raise OperationError(str(err)) from None

    def delete_secret(self, secret_id: str) -> bool:
        try:
            return self.runtime.secrets.delete(secret_id)
        except SecretError as err:
            raise OperationError(str(err)) from None

    def environment_volumes(self, env: Environment) -> list[dict[str, Any]]:
        """The network volumes the environment's endpoints attach, with where their data is."""
        app = self.store.app(env.app_id)
        seen: dict[str, dict[str, Any]] = {}
        for endpoint in self.store.endpoints(env.id):
            volume_id = attached_volume(endpoint.settings)
            volume = self.store.volume(volume_id) if volume_id else None
            if volume is None or volume.id in seen or app is None:
                continue
            path = volumes.host_dir(self.config, app.name, env.name, volume.name)
            seen[volume.id] = {**volume.to_rest(), "localPath": str(path)}
        return list(seen.values())

    def environment_state(self, env: Environment) -> str:
        """The stored state, except that an environment whose endpoints' workers crash at start
        is ``failed`` until one of them is ready again."""
        if env.state == "deployed" and any(
            self.runtime.failure(ep.id) for ep in self.store.endpoints(env.id)
        ):
            return "failed"
        return env.state

    @staticmethod
    def _resource_for(name: str, template_env: dict[str, str], build: Build) -> str:
        resource = template_env.get("FLASH_RESOURCE_NAME") or name
        if resource not in build.resources:
            known = ", ".join(sorted(build.resources)) or "none"
            raise OperationError(
                f"endpoint {name!r} serves resource {resource!r}, which the environment's build "
                f"does not have (it has: {known}); set FLASH_RESOURCE_NAME in the template env"
            )
        return resource

    @staticmethod
    def _type_for(
        data: dict[str, Any], template_env: dict[str, str], build: Build, resource: str
    ) -> str:
        manifest_type = "LB" if build.resources[resource].get("is_load_balanced") else "QB"
        given = data.get("type") or template_env.get("FLASH_ENDPOINT_TYPE") or manifest_type
        given = given.upper()
        if given not in ENDPOINT_TYPES:
            raise OperationError(f"endpoint type {given!r} is not one of QB, LB")
        if given != manifest_type:
            kind = "load-balanced" if manifest_type == "LB" else "queue-based"
            raise OperationError(
                f"endpoint type {given} does not match resource {resource!r}, which is {kind} "
                f"in the build's manifest"
            )
        return given

    def _spec(self, endpoint: Endpoint, build: Build) -> EndpointSpec:
        template = self.store.template(endpoint.template_id)
        resource = build.resources[endpoint.resource_name]
        defaults = EndpointSpec.__dataclass_fields__

        def setting(key: str, field: str) -> Any:
            value = endpoint.settings.get(key)
            return defaults[field].default if value is None else value

        return EndpointSpec(
            id=endpoint.id,
            name=endpoint.name,
            resource_name=endpoint.resource_name,
            type="lb" if endpoint.type == "LB" else "qb",
            app_id=build.app_id,
            environment_id=endpoint.environment_id,
            build_id=build.id,
            artifact_path=self.config.artifacts_dir / build.artifact,
            python_version=str(build.serving.get("python_version") or ""),
            workers_min=setting("workersMin", "workers_min"),
            workers_max=setting("workersMax", "workers_max"),
            idle_timeout=setting("idleTimeout", "idle_timeout"),
            scaler_type=setting("scalerType", "scaler_type"),
            scaler_value=setting("scalerValue", "scaler_value"),
            execution_timeout_ms=setting("executionTimeoutMs", "execution_timeout_ms"),
            max_concurrency=int(resource.get("max_concurrency") or 1),
            env=self._worker_env(template, build),
            image=(template.image_name or "") if template else "",
            template_version=_digest(template.to_input()) if template else "",
            # Our artifacts carry our worker core and say which images they target; any other
            # (runpod-flash's own) needs the official image's environment and entry.
            entry="flash" if build.serving.get("image_target") else "official",
            system_dependencies=tuple(str(p) for p in resource.get("systemDependencies") or ()),
            gpu_count=_gpu_count(endpoint.settings),
            gpu_ids=str(endpoint.settings.get("gpuIds") or ""),
            volume_dir=self._volume_dir(endpoint),
        )

    def _worker_env(self, template: Template | None, build: Build) -> dict[str, str]:
        """The template's env; for a Runpod SDK 2.0 app's workers, also the data plane at the
        TLS front (their SDK calls load-balanced siblings at ``https://flash.{host}``) and the
        CA bundle that trusts it, unless the template says otherwise."""
        env = dict(template.env) if template else {}
        if appmanifest.is_app_manifest(build.manifest) and tls.enabled():
            env.setdefault("RUNPOD_ENDPOINT_BASE_URL", f"{self.config.tls_url}/v2")
            env.setdefault("SSL_CERT_FILE", str(tls.bundle_path(self.config)))
        return env

    def _volume_dir(self, endpoint: Endpoint) -> str:
        """The host directory of the endpoint's network volume: one per (app, environment,
        volume name), under ``platform/volumes`` (see ``volumes.py``); "" without one."""
        volume_id = attached_volume(endpoint.settings)
        if volume_id is None:
            return ""
        volume = self.store.volume(volume_id)
        env = self.store.environment(endpoint.environment_id)
        app = self.store.app(env.app_id) if env else None
        if volume is None or env is None or app is None:
            return ""
        return str(volumes.host_dir(self.config, app.name, env.name, volume.name))

    def _record_url(self, build_id: str, resource: str, url: str | None) -> None:
        """Keeps ``resources_endpoints`` of a build's manifest true to what runs.

        Local load-balanced URLs are ports the runtime picks (and may change on a restart), so
        no client can derive them from the endpoint id as it can on Runpod; recording them here
        lets the deployer and cross-endpoint discovery read them from the manifest.
        """
        build = self.store.build(build_id)
        if build is None:
            return
        manifest = build.manifest
        urls = dict(manifest.get("resources_endpoints") or {})
        if url is None:
            urls.pop(resource, None)
        else:
            urls[resource] = url
        manifest["resources_endpoints"] = urls
        self.store.set_build_manifest(build_id, manifest)

    async def _apply(self, endpoint: Endpoint, build: Build) -> str:
        try:
            url = await self.runtime.apply(self._spec(endpoint, build))
        except Exception as exc:
            log.exception("runtime.apply failed for endpoint %s", endpoint.id)
            raise OperationError(
                f"the platform could not run endpoint {endpoint.name!r} ({endpoint.id}): "
                f"{exc}; see the platform log"
            ) from exc
        self._record_url(build.id, endpoint.resource_name, url)
        return url

    async def _remove(self, endpoint: Endpoint) -> None:
        url = self.runtime.url_of(endpoint.id)
        try:
            await self.runtime.remove(endpoint.id)
        except Exception as exc:
            log.exception("runtime.remove failed for endpoint %s", endpoint.id)
            raise OperationError(
                f"the platform could not stop endpoint {endpoint.name!r} ({endpoint.id}): "
                f"{exc}; see the platform log"
            ) from exc
        self.store.delete_endpoint(endpoint.id)
        build = self.store.build(endpoint.build_id)
        recorded = (build.manifest.get("resources_endpoints") if build else None) or {}
        if url is not None and recorded.get(endpoint.resource_name) == url:
            self._record_url(endpoint.build_id, endpoint.resource_name, None)


def _digest(value: Any) -> str:
    return hashlib.sha256(orjson.dumps(value, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def _valid_manifest(manifest: Any) -> dict[str, Any]:
    """A build's manifest: a ``flash_manifest.json``, or a Runpod SDK 2.0 app's
    ``runpod_manifest.json`` (its ``resources`` a list)."""
    try:
        if appmanifest.is_app_manifest(manifest):
            appmanifest.from_builtins(manifest, "manifest")
        else:
            manifest_schema.from_builtins(manifest, "manifest")
    except ManifestError as exc:
        raise OperationError(str(exc)) from None
    return cast(dict[str, Any], manifest)


def _settings(data: dict[str, Any]) -> dict[str, Any]:
    settings = {key: data[key] for key in _SETTINGS if data.get(key) is not None}
    workers_min = settings.get("workersMin", 0)
    workers_max = settings.get(
        "workersMax", EndpointSpec.__dataclass_fields__["workers_max"].default
    )
    if workers_min < 0 or workers_max < 1 or workers_min > workers_max:
        raise OperationError(
            f"workersMin {workers_min} and workersMax {workers_max}: need 0 <= workersMin <= "
            "workersMax and workersMax >= 1"
        )
    scaler = settings.get("scalerType")
    if scaler is not None and scaler not in SCALER_TYPES:
        raise OperationError(f"scalerType {scaler!r} is not one of {', '.join(SCALER_TYPES)}")
    return settings


# GraphQL binding

Resolver = Callable[..., Any]


def _base_url(info: Any) -> str:
    request: Request = info.context["request"]
    return str(request.base_url).rstrip("/")


def _resolvers(cp: ControlPlane) -> dict[str, dict[str, Resolver]]:
    """``{type: {field: resolver}}``; other fields go through :func:`_field_resolver`."""
    store = cp.store
    return {
        "Query": {
            "myself": lambda _, info: {"id": "local"},
            "flashApp": lambda _, info, flashAppId: cp.app(flashAppId),
            "flashAppByName": lambda _, info, flashAppName: cp.app_by_name(flashAppName),
            "flashEnvironment": lambda _, info, flashEnvironmentId: cp.environment(
                flashEnvironmentId
            ),
            "flashEnvironmentByName": lambda _, info, input: cp.environment_by_name(
                input["flashAppId"], input["name"]
            ),
            "flashBuild": lambda _, info, flashBuildId: cp.build(flashBuildId),
            "podTemplate": lambda _, info, id: cp.pod_template(id),
        },
        "Mutation": {
            "createFlashApp": lambda _, info, input: cp.create_app(input["name"]),
            "deleteFlashApp": lambda _, info, flashAppId: cp.delete_app(flashAppId),
            "createFlashEnvironment": lambda _, info, input: cp.create_environment(
                input["flashAppId"], input["name"]
            ),
            "deleteFlashEnvironment": lambda _, info, flashEnvironmentId: cp.delete_environment(
                flashEnvironmentId
            ),
            "prepareFlashArtifactUpload": lambda _, info, input: cp.prepare_upload(
                input["flashAppId"], input["tarballSize"], _base_url(info)
            ),
            "finalizeFlashArtifactUpload": lambda _, info, input: cp.finalize_upload(
                input["flashAppId"], input["objectKey"], input["manifest"]
            ),
            "deployBuildToEnvironment": lambda _, info, input: cp.deploy_build(
                input["flashEnvironmentId"], input["flashBuildId"]
            ),
            "updateFlashBuildManifest": lambda _, info, input: cp.update_build_manifest(
                input["flashBuildId"], input["manifest"]
            ),
            "saveEndpoint": lambda _, info, input: cp.save_endpoint(input),
            "deleteEndpoint": lambda _, info, id: cp.delete_endpoint(id),
            "saveTemplate": lambda _, info, input: cp.save_template(input),
            "deleteTemplate": lambda _, info, templateName: cp.delete_template(templateName),
            "deployCpuPod": lambda _, info, input: cp.deploy_pod(input, gpu=False),
            "podFindAndDeployOnDemand": lambda _, info, input=None: cp.deploy_pod(
                input or {}, gpu=True
            ),
            "secretCreate": lambda _, info, input: cp.create_secret(input),
            "secretDelete": lambda _, info, id: cp.delete_secret(id),
        },
        "User": {
            "secrets": lambda _, info: cp.runtime.secrets.list(),
            "flashApps": lambda _, info: store.apps(),
            "endpoint": lambda _, info, id: store.endpoint(id),
            "endpoints": lambda _, info: store.endpoints(),
        },
        "FlashApp": {
            "flashEnvironments": lambda app, info: store.environments(app.id),
            "flashBuilds": lambda app, info: store.builds(app.id),
        },
        "FlashEnvironment": {
            "endpoints": lambda env, info: store.endpoints(env.id),
            "networkVolumes": lambda env, info: cp.environment_volumes(env),
            "activeArtifact": lambda env, info: cp.active_artifact(env, _base_url(info)),
            "state": lambda env, info: cp.environment_state(env),
        },
        "Endpoint": {
            "template": lambda ep, info: store.template(ep.template_id),
            "flashEnvironmentId": lambda ep, info: ep.environment_id,
            "activeBuildid": lambda ep, info: ep.build_id,
            "userId": lambda ep, info: "local",
            **{key: _setting(key) for key in _SETTINGS},
        },
        "PodTemplate": {
            "env": lambda template, info: [{"key": k, "value": v} for k, v in template.env.items()],
            "readme": lambda template, info: template.other.get("readme"),
            "isServerless": lambda template, info: template.other.get("isServerless"),
        },
    }


def _gpu_count(settings: dict[str, Any]) -> int:
    """GPUs per worker: ``gpuCount`` of a GPU endpoint (one with ``gpuIds``), else 0."""
    if not settings.get("gpuIds") or settings.get("instanceIds"):
        return 0
    try:
        return max(1, int(settings.get("gpuCount") or 1))
    except (TypeError, ValueError):
        return 1


def _setting(key: str) -> Resolver:
    return lambda endpoint, info: endpoint.settings.get(key)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _field_resolver(source: Any, info: Any, **args: Any) -> Any:
    """Fields without a resolver of their own: a mapping's key, or a record's attribute by the
    field's name in snake case (``createdAt`` -> ``created_at``)."""
    name = info.field_name
    if isinstance(source, Mapping):
        return source.get(name)
    return getattr(source, _snake(name), None)


def build_control_plane_schema(cp: ControlPlane) -> GraphQLSchema:
    """``schema.graphql`` with the control plane's resolvers bound to it."""
    schema = build_schema(_sdl())
    for type_name, fields in _resolvers(cp).items():
        graphql_type = cast(GraphQLObjectType, schema.get_type(type_name))
        for field_name, resolver in fields.items():
            graphql_type.fields[field_name].resolve = resolver
    return schema


def _json_response(body: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _error_response(status: int, message: str) -> Response:
    return _json_response({"errors": [{"message": message}]}, status)


def _format_error(error: GraphQLError) -> dict[str, Any]:
    original = error.original_error
    if original is not None and not isinstance(original, OperationError | FlashError):
        log.error("control plane resolver failed", exc_info=original)
        error.message = (
            f"internal error in the local platform: {type(original).__name__}: {original}"
        )
    return cast(dict[str, Any], error.formatted)


def _authorized(request: Request, api_key: str) -> bool:
    """The platform key as a bearer token, or as Runpod's ``?api_key=`` query parameter."""
    if bearer_ok(request, api_key):
        return True
    token = request.query_params.get("api_key", "")
    return bool(token) and hmac.compare_digest(token.encode(), api_key.encode())


@dataclass
class RequestLog:
    """The GraphQL operations ``/graphql`` received (by operation name), and a switch that makes
    it answer 503 as if the control plane were down. Both are for testing clients (discovery's
    cache, its behaviour in an outage) and are served at ``/platform/graphql``."""

    received: Counter[str] = field(default_factory=Counter)
    available: bool = True

    def to_json(self) -> dict[str, Any]:
        return {"available": self.available, "received": dict(self.received)}


def _operation_name(document: DocumentNode, requested: Any) -> str:
    names = [
        d.name.value if d.name else "(anonymous)"
        for d in document.definitions
        if isinstance(d, OperationDefinitionNode)
    ]
    return requested if isinstance(requested, str) and requested in names else names[0]


def routes(db: sqlite3.Connection, runtime: Runtime, config: PlatformConfig) -> list[BaseRoute]:
    """The control plane's routes: ``POST /graphql``, the artifact upload and download URLs,
    and ``/platform/graphql`` (GET: the request log; POST ``{"available": false}``: make
    ``/graphql`` fail until ``{"available": true}``)."""
    cp = ControlPlane(db, runtime, config)
    schema = build_control_plane_schema(cp)
    requests = RequestLog()

    async def graphql_endpoint(request: Request) -> Response:
        if not _authorized(request, config.api_key):
            return _error_response(
                401,
                "missing or wrong API key: send `Authorization: Bearer <key>`; the local "
                "platform's key is shown by `flash platform status`",
            )
        try:
            raw = await read_body(request, MAX_BODY_BYTES)
        except ApiError as err:
            return _error_response(err.status, str(err))
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _error_response(400, "the request body is not JSON")
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return _error_response(400, 'expected a JSON object {"query": ..., "variables": {...}}')
        # A document that does not parse or validate never runs: that is a bad request (400);
        # errors while running it come back with the data, as GraphQL does (200).
        try:
            document = parse(body["query"], max_tokens=MAX_TOKENS)
        except GraphQLError as error:
            return _json_response({"errors": [error.formatted]}, 400)
        too_much = _cost(document)
        if too_much is not None:
            return _error_response(400, f"{too_much}: ask for less in one request")
        invalid = validate(schema, document)
        if invalid:
            return _json_response({"errors": [error.formatted for error in invalid]}, 400)
        requests.received[_operation_name(document, body.get("operationName"))] += 1
        if not requests.available:
            return _error_response(
                503,
                "the control plane is switched off (POST /platform/graphql "
                '{"available": true} switches it on)',
            )
        variables = body.get("variables")
        result = execute(
            schema,
            document,
            variable_values=variables if isinstance(variables, dict) else None,
            operation_name=body.get("operationName"),
            context_value={"request": request},
            field_resolver=_field_resolver,
        )
        if not isinstance(result, ExecutionResult):
            result = await result
        payload: dict[str, Any] = {"data": result.data}
        if result.errors:
            payload["errors"] = [_format_error(error) for error in result.errors]
        return _json_response(payload)

    async def request_log(request: Request) -> Response:
        if not _authorized(request, config.api_key):
            return _error_response(401, "missing or wrong API key")
        if request.method == "POST":
            try:
                body = orjson.loads(await request.body())
            except orjson.JSONDecodeError:
                body = None
            if not isinstance(body, dict) or not isinstance(body.get("available"), bool):
                return _error_response(400, 'expected {"available": true|false}')
            requests.available = body["available"]
        return _json_response(requests.to_json())

    return [
        Route("/graphql", graphql_endpoint, methods=["POST"]),
        Route("/platform/graphql", request_log, methods=["GET", "POST"]),
        *upload_routes(cp.store, config),
        *rest2.routes(cp.store, runtime, config, cp.delete_endpoint),
    ]


def sentinel_resolver(db: sqlite3.Connection) -> Callable[[str, str, str], str | None]:
    """Finds an endpoint's id by (app, environment, endpoint) names, for the serverless API's
    sentinel calls (``/v2/flash/...``)."""
    store = ControlPlaneStore(db)

    def resolve(app_name: str, env_name: str, endpoint_name: str) -> str | None:
        app = store.app_by_name(app_name)
        env = store.environment_by_name(app.id, env_name) if app else None
        if env is None:
            return None
        found = [ep.id for ep in store.endpoints(env.id) if ep.name == endpoint_name]
        return found[0] if found else None

    return resolve


async def resume(db: sqlite3.Connection, runtime: Runtime, config: PlatformConfig) -> None:
    """Re-applies every stored endpoint to ``runtime``; call it when the platform starts."""
    await ControlPlane(db, runtime, config).resume()
