"""Runpod's REST API at ``/v2`` (``https://api.runpod.io/v2/...``), as far as the Runpod SDK 2.0 uses it.

The 2.0 SDK (``runpod.apps``) saves endpoints through GraphQL but lists and deletes them, finds
network volumes and reads the hardware catalog over REST, from ``RUNPOD_API_BASE_URL`` (here:
the platform's own URL). Served here:

======================================  ==================================================
``GET /v2/serverless``                  ``{"endpoints": [...]}``: every endpoint
``GET|DELETE /v2/serverless/{id}``      one endpoint; deleting it stops its workers
``GET /v2/serverless/{id}/workers``     its workers and their states
``GET|POST /v2/network-volumes``        network volumes (cursor pages; ``{name, size,
                                        dataCenter}`` creates one)
``GET /v2/global-volumes``              always empty: the local platform has none, and
                                        ``POST`` says so (400)
``GET /v2/catalog/datacenters``         Runpod's data centres, each with network storage
``GET /v2/catalog/cpus|gpus/{id}``      stock: ``HIGH`` in every data centre for CPUs, and
                                        for GPUs when this machine has enough of them
                                        (``NONE`` otherwise)
``DELETE /v2/pods/{id}``                terminates a task pod (``pods.py``)
======================================  ==================================================

Errors come back as Runpod's REST errors do (``{"title": ..., "detail": ...}``), which the SDK
turns into messages. Endpoint creation and updates over REST are refused with a pointer to
GraphQL's ``saveEndpoint``: the local platform runs Flash endpoints only, which REST cannot
bind to an environment (the 2.0 SDK itself uses GraphQL for them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..protocol.local import PlatformConfig
from ..resources import DataCenter
from .controlplane_store import ControlPlaneStore
from .model import Runtime
from .serverless import JSONResponse, bearer_ok, read_body
from .volumes import attached_volume

MAX_BODY = 64 * 1024
PAGE = 100


class RestError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


_TITLES = {400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 409: "Conflict"}


def _error(err: RestError) -> Response:
    body = {"title": _TITLES.get(err.status, "Error"), "status": err.status, "detail": err.detail}
    return JSONResponse(body, status_code=err.status)


def _endpoint_json(store: ControlPlaneStore, runtime: Runtime, endpoint: Any) -> dict[str, Any]:
    template = store.template(endpoint.template_id)
    settings = endpoint.settings
    workers = {
        "min": settings.get("workersMin", 0),
        "max": settings.get("workersMax", 3),
        "idleTimeout": settings.get("idleTimeout", 5),
    }
    volume = attached_volume(settings)
    return {
        "id": endpoint.id,
        "name": endpoint.name,
        "type": "LOAD_BALANCER" if endpoint.type == "LB" else "QUEUE",
        "templateId": endpoint.template_id,
        "image": template.image_name if template else None,
        "workers": workers,
        "networkVolumes": [volume] if volume else [],
        "flashEnvironmentId": endpoint.environment_id,
        "url": runtime.url_of(endpoint.id),
        "createdAt": endpoint.created_at,
    }


def _volume_json(volume: Any) -> dict[str, Any]:
    return {
        "id": volume.id,
        "name": volume.name,
        "size": volume.size,
        "dataCenter": volume.data_center_id,
        "type": "STANDARD",
    }


def routes(
    store: ControlPlaneStore,
    runtime: Runtime,
    config: PlatformConfig,
    delete_endpoint: Callable[[str], Awaitable[bool]],
) -> list[BaseRoute]:
    """The routes; ``delete_endpoint`` is the control plane's (under its environment lock)."""
    known_dcs = sorted(d.value for d in DataCenter)

    def handler(func: Any) -> Any:
        async def endpoint(request: Request) -> Response:
            if not bearer_ok(request, config.api_key):
                return _error(RestError(401, "missing or wrong API key"))
            try:
                response: Response = await func(request)
            except RestError as err:
                return _error(err)
            return response

        return endpoint

    async def json_body(request: Request) -> dict[str, Any]:
        raw = await read_body(request, MAX_BODY)
        try:
            body = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            raise RestError(400, "the request body is not JSON") from None
        if not isinstance(body, dict):
            raise RestError(400, "the request body must be a JSON object")
        return body

    async def endpoints(request: Request) -> Response:
        if request.method == "POST":
            raise RestError(
                400,
                "the local platform creates Flash endpoints only, bound to an environment: "
                "use GraphQL saveEndpoint with flashEnvironmentId (rp flash deploy does)",
            )
        return JSONResponse(
            {"endpoints": [_endpoint_json(store, runtime, e) for e in store.endpoints()]}
        )

    def found(request: Request) -> Any:
        endpoint_id = request.path_params["endpoint_id"]
        endpoint = store.endpoint(endpoint_id)
        if endpoint is None:
            raise RestError(404, f"endpoint {endpoint_id!r} not found")
        return endpoint

    async def one_endpoint(request: Request) -> Response:
        endpoint = found(request)
        if request.method == "DELETE":
            await delete_endpoint(endpoint.id)
            return Response(status_code=204)
        if request.method == "PATCH":
            raise RestError(
                400,
                "the local platform updates endpoints through GraphQL saveEndpoint (with the "
                "endpoint's id), which keeps their environment binding",
            )
        return JSONResponse(_endpoint_json(store, runtime, endpoint))

    async def endpoint_workers(request: Request) -> Response:
        endpoint = found(request)
        platform: Any = runtime  # the platform's runtime (a test's recording one has none)
        state = platform.endpoint(endpoint.id) if hasattr(platform, "endpoint") else None
        workers = (
            [
                w.info(jobs=platform.jobs.lease_count(w.id))
                for w in state.workers.values()
                if w.alive
            ]
            if state is not None
            else []
        )
        return JSONResponse({"workers": workers})

    async def network_volumes(request: Request) -> Response:
        if request.method == "POST":
            body = await json_body(request)
            name, size, dc = body.get("name"), body.get("size"), body.get("dataCenter")
            if not isinstance(name, str) or not name.strip():
                raise RestError(400, "name: a network volume needs a non-empty name")
            if not isinstance(size, int) or isinstance(size, bool) or not 10 <= size <= 4096:
                raise RestError(400, f"size: a whole number of GB from 10 to 4096, not {size!r}")
            if dc not in known_dcs:
                raise RestError(400, f"dataCenter: {dc!r} is not one of {', '.join(known_dcs)}")
            with store.transaction():
                volume = store.create_volume(name.strip(), size, str(dc))
            return JSONResponse(_volume_json(volume))
        volumes = [_volume_json(v) for v in store.volumes()]
        cursor = request.query_params.get("cursor") or "0"
        if not cursor.isdigit():
            raise RestError(400, f"cursor {cursor!r} is not one this API gave")
        start = int(cursor)
        page = volumes[start : start + PAGE]
        more = start + PAGE < len(volumes)
        pagination: dict[str, Any] = {"hasNextPage": more}
        if more:
            pagination["nextCursor"] = str(start + PAGE)
        return JSONResponse({"networkVolumes": page, "pagination": pagination})

    async def global_volumes(request: Request) -> Response:
        if request.method == "POST":
            raise RestError(
                400,
                "the local platform has no global volumes; mount a NetworkVolume at "
                "/runpod-volume instead",
            )
        return JSONResponse({"globalVolumes": [], "pagination": {"hasNextPage": False}})

    async def datacenters(request: Request) -> Response:
        return JSONResponse(
            {"dataCenters": [{"id": dc, "networkVolumeTypes": ["STANDARD"]} for dc in known_dcs]}
        )

    def stock(request: Request, level: str) -> Response:
        every = [{"id": dc, "availability": level} for dc in known_dcs]
        return JSONResponse({"id": request.path_params["item"], "dataCenters": every})

    async def cpu_stock(request: Request) -> Response:
        return stock(request, "HIGH")

    async def gpu_stock(request: Request) -> Response:
        raw = request.query_params.get("count") or "1"
        count = int(raw) if raw.isdigit() else 1
        have = len(getattr(getattr(runtime, "gpus", None), "gpus", []) or [])
        return stock(request, "HIGH" if have >= count else "NONE")

    async def pod(request: Request) -> Response:
        platform: Any = runtime
        if not await platform.pods.terminate(request.path_params["pod_id"]):
            raise RestError(404, f"pod {request.path_params['pod_id']!r} not found")
        return Response(status_code=204)

    return [
        Route("/v2/pods/{pod_id:path}", handler(pod), methods=["DELETE"]),
        Route("/v2/serverless", handler(endpoints), methods=["GET", "POST"]),
        Route(
            "/v2/serverless/{endpoint_id}",
            handler(one_endpoint),
            methods=["GET", "DELETE", "PATCH"],
        ),
        Route("/v2/serverless/{endpoint_id}/workers", handler(endpoint_workers), methods=["GET"]),
        Route("/v2/network-volumes", handler(network_volumes), methods=["GET", "POST"]),
        Route("/v2/global-volumes", handler(global_volumes), methods=["GET", "POST"]),
        Route("/v2/catalog/datacenters", handler(datacenters), methods=["GET"]),
        Route("/v2/catalog/cpus/{item}", handler(cpu_stock), methods=["GET"]),
        Route("/v2/catalog/gpus/{item}", handler(gpu_stock), methods=["GET"]),
    ]
