"""The serverless API of queue-based endpoints, as Runpod serves it at ``/v2/{endpoint_id}``.

``POST /run`` and ``/runsync`` take ``{"input": ..., "webhook"?, "policy"?}``; ``GET /status/{job}``,
``GET|POST /stream/{job}``, ``POST /cancel/{job}``, ``POST /retry/{job}`` (a FAILED or TIMED_OUT
job queued again), ``GET /health``, ``POST /purge-queue``. ``/v2/flash/...`` (the Runpod SDK
2.0's sentinel) names the endpoint by headers instead: ``X-Flash-App``, ``X-Flash-Environment``,
``X-Flash-Endpoint``.
Every call needs ``Authorization: Bearer <API key>`` (the raw key is accepted too, as Runpod
does). Responses and errors use Runpod's shapes, so the official ``runpod`` client works with
``RUNPOD_ENDPOINT_BASE_URL={platform}/v2``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..protocol.wire import (
    SENTINEL_ID,
    UNAUTHORIZED,
    key_matches,
    request_id_of,
    sentinel_names,
)
from . import reporting
from .jobs import Job
from .runtime import PlatformRuntime, labels_of
from .settings import MAX_REQUEST_BYTES
from .state import EndpointState

SentinelResolver = Callable[[str, str, str], str | None]

RUNSYNC_DEFAULT_WAIT_MS = 90_000
RUNSYNC_MAX_WAIT_MS = 300_000
STREAM_WAIT_S = 5.0  # /stream holds this long for a chunk while the job runs


class JSONResponse(Response):
    """orjson-encoded JSON (``orjson.Fragment`` values are embedded as is)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


class ApiError(Exception):
    """A request the platform refuses: raised by handlers and their helpers, answered by the
    app's handler (:func:`api_error_response`) as ``{"error": message, ...}`` with ``status``."""

    def __init__(self, status: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": message, **extra}


async def api_error_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse(exc.body, status_code=exc.status)


def bearer_ok(request: Request, key: str) -> bool:
    """``Authorization: Bearer <key>`` or the raw key."""
    return key_matches(request.headers.get("authorization"), key)


async def read_body(request: Request, limit: int = MAX_REQUEST_BYTES) -> bytes:
    """The request body; ApiError 413 past ``limit`` bytes (checked before reading it all)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _too_large(limit)
    return bytes(body)


# The longest policy.executionTimeout / policy.ttl accepted (ms).
MAX_MS = 365 * 24 * 3600 * 1000


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"request body is larger than {limit // 2**20} MB")


def parse_json(body: bytes) -> Any:
    try:
        return orjson.loads(body) if body else None
    except orjson.JSONDecodeError as err:
        raise ApiError(400, f"request body is not valid JSON: {err}") from None


class ServerlessAPI:
    """Handlers of the client-facing serverless API."""

    def __init__(self, runtime: PlatformRuntime, resolve: SentinelResolver | None = None) -> None:
        self.runtime = runtime
        self.jobs = runtime.jobs
        self.resolve = resolve

    def routes(self) -> list[BaseRoute]:
        prefix = "/v2/{endpoint_id}"
        return [
            Route(f"{prefix}/run", self.run, methods=["POST"]),
            Route(f"{prefix}/runsync", self.runsync, methods=["POST"]),
            Route(f"{prefix}/status/{{job_id}}", self.status, methods=["GET", "POST"]),
            Route(f"{prefix}/stream/{{job_id}}", self.stream, methods=["GET", "POST"]),
            Route(f"{prefix}/cancel/{{job_id}}", self.cancel, methods=["POST"]),
            Route(f"{prefix}/retry/{{job_id}}", self.retry, methods=["POST"]),
            Route(f"{prefix}/health", self.health, methods=["GET"]),
            Route(f"{prefix}/purge-queue", self.purge, methods=["POST"]),
        ]

    def _endpoint(self, request: Request, *, qb_only: bool = True) -> EndpointState:
        if not bearer_ok(request, self.runtime.config.api_key):
            raise ApiError(401, UNAUTHORIZED)
        endpoint_id = request.path_params["endpoint_id"]
        if endpoint_id == SENTINEL_ID:
            endpoint_id = self._sentinel(request)
        ep = self.runtime.endpoint(endpoint_id)
        if ep is None:
            raise ApiError(404, f"endpoint {endpoint_id!r} not found")
        if qb_only and ep.spec.type != "qb":
            raise ApiError(
                404,
                f"endpoint {endpoint_id!r} is load-balanced: call its routes at "
                f"{self.runtime.url_of(endpoint_id)}",
            )
        return ep

    def _sentinel(self, request: Request) -> str:
        """The endpoint a call to ``/v2/flash/...`` means: the one named ``X-Flash-Endpoint``
        in app ``X-Flash-App``'s environment ``X-Flash-Environment`` (how the Runpod SDK 2.0
        calls an app's resources, leaving the lookup to the platform)."""
        names = sentinel_names(request.headers)
        if names is None:
            raise ApiError(
                400,
                "/v2/flash/... needs the X-Flash-App, X-Flash-Environment and X-Flash-Endpoint "
                "headers (the app, environment and endpoint names)",
            )
        found = self.resolve(*names) if self.resolve is not None else None
        if found is None:
            app, env, name = names
            raise ApiError(404, f"no endpoint {name!r} in app {app!r}, environment {env!r}")
        return found

    def _job(self, request: Request, ep: EndpointState) -> Job:
        job_id = request.path_params["job_id"]
        job = self.jobs.get(job_id)
        if job is None or job.endpoint_id != ep.id:
            raise ApiError(404, f"job {job_id!r} not found (finished jobs are kept for a while)")
        return job

    async def _submit(self, request: Request, *, sync: bool) -> Job:
        ep = self._endpoint(request)
        body = await read_body(request)
        payload = parse_json(body)
        if not isinstance(payload, dict) or "input" not in payload:
            raise ApiError(400, 'request body must be a JSON object with an "input" field')
        webhook = payload.get("webhook")
        if webhook is not None and not isinstance(webhook, str):
            raise ApiError(400, '"webhook" must be a URL string')
        policy = payload.get("policy") or {}
        if not isinstance(policy, dict):
            raise ApiError(400, '"policy" must be an object')
        timeout_ms = policy.get("executionTimeout", ep.spec.execution_timeout_ms)
        ttl_ms = policy.get("ttl")
        for name, value in (("executionTimeout", timeout_ms), ("ttl", ttl_ms)):
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_MS:
                raise ApiError(
                    400, f'"policy.{name}" must be an integer of ms from 0 to {MAX_MS} (a year)'
                )
        try:
            job = self.jobs.submit(
                ep.id,
                payload["input"],
                webhook=webhook,
                execution_timeout_ms=timeout_ms or 0,
                ttl_ms=ttl_ms,
                sync=sync,
                request_id=request_id_of(request.headers.get("x-request-id")),
            )
            self.runtime.metrics.count("flash_jobs_submitted_total", labels_of(ep))
        except orjson.JSONEncodeError as err:  # parsed, but deeper than JSON can be written
            raise ApiError(400, f'"input" cannot be stored as JSON: {err}') from None
        self.runtime.job_submitted(ep)
        return job

    async def run(self, request: Request) -> Response:
        job = await self._submit(request, sync=False)
        return JSONResponse(
            {"id": job.id, "status": job.status.value}, headers=_request_header(job)
        )

    async def runsync(self, request: Request) -> Response:
        """Wait up to ``?wait=`` ms (default 90 s) for the result; past that answer with the
        job's id and current status, and the caller polls ``/status``."""
        raw_wait = request.query_params.get("wait")
        wait_ms = RUNSYNC_DEFAULT_WAIT_MS
        if raw_wait is not None:
            if not raw_wait.isdigit():
                raise ApiError(400, f"wait={raw_wait!r} must be milliseconds")
            wait_ms = min(int(raw_wait), RUNSYNC_MAX_WAIT_MS)
        job = await self._submit(request, sync=True)
        await self.jobs.wait(job, wait_ms / 1000)
        if job.final:
            self.jobs.mark_delivered(job)
            return JSONResponse(job.payload(), headers=_request_header(job))
        return JSONResponse(
            {"id": job.id, "status": job.status.value}, headers=_request_header(job)
        )

    async def status(self, request: Request) -> Response:
        ep = self._endpoint(request)
        job = self._job(request, ep)
        raw_wait = request.query_params.get("wait")
        if raw_wait and raw_wait.isdigit() and not job.final:
            await self.jobs.wait(job, min(int(raw_wait), RUNSYNC_MAX_WAIT_MS) / 1000)
        return JSONResponse(job.payload())

    async def stream(self, request: Request) -> Response:
        """Chunks a generator job produced since the previous call (each returned once)."""
        ep = self._endpoint(request)
        job = self._job(request, ep)
        status, chunks = await self.jobs.read_stream(job, STREAM_WAIT_S)
        body: dict[str, Any] = {
            "id": job.id,
            "status": status.value,
            "stream": [{"output": orjson.Fragment(chunk)} for chunk in chunks],
        }
        if job.final and job.error is not None:
            body["error"] = orjson.Fragment(job.error)
        return JSONResponse(body)

    async def cancel(self, request: Request) -> Response:
        ep = self._endpoint(request)
        job = self._job(request, ep)
        job = self.jobs.cancel(job)
        return JSONResponse({"id": job.id, "status": job.status.value})

    async def retry(self, request: Request) -> Response:
        ep = self._endpoint(request)
        job = self._job(request, ep)
        try:
            job = self.jobs.retry(job)
        except ValueError as err:
            raise ApiError(400, str(err)) from None
        self.runtime.job_submitted(ep)
        return JSONResponse({"id": job.id, "status": job.status.value})

    async def health(self, request: Request) -> Response:
        ep = self._endpoint(request, qb_only=False)
        return JSONResponse(reporting.health(ep, self.runtime.jobs))

    async def purge(self, request: Request) -> Response:
        ep = self._endpoint(request)
        removed = self.jobs.purge(ep.id)
        return JSONResponse({"removed": removed, "status": "completed"})


def routes(runtime: PlatformRuntime, resolve: SentinelResolver | None = None) -> list[BaseRoute]:
    """The serverless API routes (mounted by ``server.py``); ``resolve`` finds the endpoint of
    a sentinel call from its (app, environment, endpoint) names."""
    return ServerlessAPI(runtime, resolve).routes()


def _request_header(job: Job) -> dict[str, str]:
    """``X-Request-ID``: the caller's, else the job's id (what its worker's lines carry)."""
    return {"X-Request-ID": job.request_id or job.id}
