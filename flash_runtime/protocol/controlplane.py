"""The control-plane client: Runpod's Flash GraphQL operations over one aiohttp session.

The same client talks to ``https://api.runpod.io/graphql`` and to the local platform; it knows
only the :class:`~.target.Target`'s address and key. Failures become :class:`ControlPlaneError`
subclasses whose messages say what to do: a refused key, a control plane that does not answer,
or the GraphQL errors the server returned.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import aiohttp
import orjson

from ..errors import FlashError
from . import operations as ops
from .target import Target
from .wire import bearer

UPLOAD_CHUNK = 1024 * 1024


class ControlPlaneError(FlashError):
    """A control-plane request failed."""


class AuthenticationError(ControlPlaneError):
    """The control plane refused the API key."""


class UnreachableError(ControlPlaneError):
    """The control plane did not answer (refused connection, DNS failure, timeout)."""


class GraphQLRequestError(ControlPlaneError):
    """The control plane answered with GraphQL errors; ``errors`` holds them as sent."""

    def __init__(self, message: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.errors = errors


class ControlPlaneClient:
    """Runpod's Flash API. Use as ``async with ControlPlaneClient(target) as client: ...``.

    ``session`` shares an aiohttp session its owner keeps open (cross-endpoint discovery uses
    the worker's one session); without it the client opens its own and closes it on exit.
    """

    def __init__(
        self,
        target: Target,
        *,
        timeout: float = 300.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.target = target
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._owns_session = session is None

    async def __aenter__(self) -> ControlPlaneClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            # No default Authorization header: presigned upload URLs must not receive it.
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    def _unreachable(self, url: str, exc: BaseException) -> UnreachableError:
        reason = str(exc) or type(exc).__name__
        return UnreachableError(
            f"cannot reach the control plane at {url} ({reason}): {self.target.unreachable_hint}"
        )

    async def execute(self, document: str, variables: dict[str, Any] | None = None) -> Any:
        """Run one document; returns its ``data``. Raises a ControlPlaneError on any error."""
        url = self.target.graphql_url
        body = orjson.dumps({"query": document, "variables": variables or {}})
        headers = {
            **bearer(self.target.api_key),
            "Content-Type": "application/json",
        }
        try:
            async with self._http().post(
                url, data=body, headers=headers, timeout=self._timeout
            ) as response:
                status = response.status
                raw = await response.read()
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise self._unreachable(url, exc) from None
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError:
            payload = None
        errors = payload.get("errors") if isinstance(payload, dict) else None
        messages = "; ".join(
            str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors or []
        )
        if status in (401, 403):
            raise AuthenticationError(
                f"the control plane at {url} refused the API key (HTTP {status}"
                f"{': ' + messages if messages else ''}); use {self.target.key_hint}"
            )
        if not isinstance(payload, dict):
            excerpt = raw[:300].decode(errors="replace")
            raise ControlPlaneError(f"{url} answered HTTP {status} with no GraphQL body: {excerpt}")
        if errors:
            raise GraphQLRequestError(messages, cast(list[dict[str, Any]], errors))
        if status >= 400:
            raise ControlPlaneError(f"{url} answered HTTP {status}")
        return payload.get("data") or {}

    # apps

    async def list_apps(self) -> list[dict[str, Any]]:
        data = await self.execute(ops.LIST_APPS)
        return cast(list[dict[str, Any]], data["myself"]["flashApps"])

    async def app_by_name(self, name: str) -> dict[str, Any]:
        data = await self.execute(ops.GET_APP_BY_NAME, {"flashAppName": name})
        return cast(dict[str, Any], data["flashAppByName"])

    async def create_app(self, name: str) -> dict[str, Any]:
        data = await self.execute(ops.CREATE_APP, {"input": {"name": name}})
        return cast(dict[str, Any], data["createFlashApp"])

    async def delete_app(self, app_id: str) -> None:
        await self.execute(ops.DELETE_APP, {"flashAppId": app_id})

    # environments

    async def create_environment(self, app_id: str, name: str) -> dict[str, Any]:
        variables = {"input": {"flashAppId": app_id, "name": name}}
        data = await self.execute(ops.CREATE_ENVIRONMENT, variables)
        return cast(dict[str, Any], data["createFlashEnvironment"])

    async def environment(self, environment_id: str) -> dict[str, Any]:
        data = await self.execute(ops.GET_ENVIRONMENT, {"flashEnvironmentId": environment_id})
        return cast(dict[str, Any], data["flashEnvironment"])

    async def environment_by_name(self, app_id: str, name: str) -> dict[str, Any]:
        variables = {"input": {"flashAppId": app_id, "name": name}}
        data = await self.execute(ops.GET_ENVIRONMENT_BY_NAME, variables)
        return cast(dict[str, Any], data["flashEnvironmentByName"])

    async def delete_environment(self, environment_id: str) -> None:
        await self.execute(ops.DELETE_ENVIRONMENT, {"flashEnvironmentId": environment_id})

    # builds

    async def prepare_upload(self, app_id: str, size: int) -> dict[str, Any]:
        variables = {"input": {"flashAppId": app_id, "tarballSize": size}}
        data = await self.execute(ops.PREPARE_ARTIFACT_UPLOAD, variables)
        return cast(dict[str, Any], data["prepareFlashArtifactUpload"])

    async def upload(
        self, url: str, artifact: Path, progress: Callable[[int], None] | None = None
    ) -> None:
        """PUT the tarball to a presigned upload URL (the URL authorises it: no key is sent)."""
        size = artifact.stat().st_size

        async def chunks() -> AsyncIterator[bytes]:
            with artifact.open("rb") as f:
                while chunk := f.read(UPLOAD_CHUNK):
                    if progress is not None:
                        progress(len(chunk))
                    yield chunk

        headers = {"Content-Type": "application/gzip", "Content-Length": str(size)}
        try:
            async with self._http().put(url, data=chunks(), headers=headers) as response:
                if response.status >= 300:
                    text = (await response.text())[:300]
                    raise ControlPlaneError(
                        f"uploading the artifact failed: HTTP {response.status}: {text}"
                    )
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise self._unreachable(url.split("?", 1)[0], exc) from None

    async def finalize_upload(
        self, app_id: str, object_key: str, manifest: dict[str, Any]
    ) -> dict[str, Any]:
        variables = {"input": {"flashAppId": app_id, "objectKey": object_key, "manifest": manifest}}
        data = await self.execute(ops.FINALIZE_ARTIFACT_UPLOAD, variables)
        return cast(dict[str, Any], data["finalizeFlashArtifactUpload"])

    async def deploy_build(self, environment_id: str, build_id: str) -> dict[str, Any]:
        variables = {"input": {"flashEnvironmentId": environment_id, "flashBuildId": build_id}}
        data = await self.execute(ops.DEPLOY_BUILD_TO_ENVIRONMENT, variables)
        return cast(dict[str, Any], data["deployBuildToEnvironment"])

    async def build(self, build_id: str) -> dict[str, Any]:
        data = await self.execute(ops.GET_BUILD, {"input": build_id})
        return cast(dict[str, Any], data["flashBuild"])

    async def update_build_manifest(self, build_id: str, manifest: dict[str, Any]) -> None:
        variables = {"input": {"flashBuildId": build_id, "manifest": manifest}}
        await self.execute(ops.UPDATE_BUILD_MANIFEST, variables)

    # endpoints

    async def save_endpoint(self, endpoint: dict[str, Any]) -> dict[str, Any]:
        data = await self.execute(ops.SAVE_ENDPOINT, {"input": endpoint})
        return cast(dict[str, Any], data["saveEndpoint"])

    async def delete_endpoint(self, endpoint_id: str) -> None:
        await self.execute(ops.DELETE_ENDPOINT, {"id": endpoint_id})

    async def endpoint_health(self, endpoint_id: str) -> dict[str, Any]:
        """The endpoint's ``GET /health`` on the platform's serverless API."""
        url = f"{self.target.queue_url_base}/{endpoint_id}/health"
        headers = {"Authorization": f"Bearer {self.target.api_key}"}
        try:
            async with self._http().get(url, headers=headers) as response:
                if response.status >= 400:
                    text = (await response.text())[:300]
                    raise ControlPlaneError(f"{url} answered HTTP {response.status}: {text}")
                return cast(dict[str, Any], await response.json())
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise self._unreachable(url, exc) from None

    # network volumes (Runpod's REST API)

    async def network_volumes(self) -> list[dict[str, Any]]:
        found = await self._rest("GET", "/networkvolumes")
        if isinstance(found, dict):  # some answers wrap the list
            found = found.get("networkVolumes") or []
        return cast(list[dict[str, Any]], found)

    async def create_network_volume(self, name: str, size: int, data_center: str) -> dict[str, Any]:
        body = {"name": name, "size": size, "dataCenterId": data_center}
        return cast(dict[str, Any], await self._rest("POST", "/networkvolumes", body))

    async def _rest(self, method: str, path: str, body: Any = None) -> Any:
        url = f"{self.target.rest_url}{path}"
        headers = {"Authorization": f"Bearer {self.target.api_key}"}
        try:
            async with self._http().request(method, url, json=body, headers=headers) as response:
                if response.status == 401:
                    raise AuthenticationError(f"{url} refused the API key (HTTP 401)")
                if response.status >= 400:
                    text = (await response.text())[:300]
                    raise ControlPlaneError(f"{url} answered HTTP {response.status}: {text}")
                return await response.json(content_type=None)
        except (TimeoutError, aiohttp.ClientConnectionError) as exc:
            raise self._unreachable(url, exc) from None

    # templates

    async def template(self, template_id: str) -> dict[str, Any]:
        data = await self.execute(ops.GET_TEMPLATE, {"id": template_id})
        return cast(dict[str, Any], data["podTemplate"])

    async def save_template(self, template: dict[str, Any]) -> dict[str, Any]:
        """Creates a template, or replaces the one ``template["id"]`` names."""
        data = await self.execute(ops.SAVE_TEMPLATE, {"input": template})
        return cast(dict[str, Any], data["saveTemplate"])

    async def delete_template(self, name: str) -> None:
        await self.execute(ops.DELETE_TEMPLATE, {"templateName": name})

    # discovery (cross-endpoint calls)

    async def discover_environment(self, environment_id: str) -> dict[str, Any] | None:
        variables = {"flashEnvironmentId": environment_id}
        data = await self.execute(ops.DISCOVER_ENVIRONMENT, variables)
        return cast(dict[str, Any] | None, data["flashEnvironment"])

    async def discover_app(self, name: str) -> dict[str, Any] | None:
        data = await self.execute(ops.DISCOVER_APP, {"flashAppName": name})
        return cast(dict[str, Any] | None, data["flashAppByName"])
