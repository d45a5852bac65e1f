"""The worker job protocol of the ``runpod`` SDK (1.12), served for queue-based endpoints.

Workers get these URLs in ``RUNPOD_WEBHOOK_*`` (see ``supervisor.worker_environment``) and
authenticate with the raw worker key in ``Authorization``:

* ``GET  /v2/{eid}/job-take/{worker}?...&job_in_progress=0|1`` — long-poll: held until a job is
  queued or ``long_poll_s`` passes; 200 with ``{"id", "input"}`` or 204.
* ``GET  /v2/{eid}/job-take-batch/{worker}?...&batch_size=N`` — the same, a JSON list of up to N.
* ``POST /v2/{eid}/job-done/{worker}/{job}?...&isStream=false|true`` — the result. The SDK labels
  the body form-encoded but sends JSON text: it is parsed as JSON whatever the content type.
  ``isStream=true`` marks the final post of a generator job.
* ``POST /v2/{eid}/job-stream/{worker}/{job}`` — one streamed chunk, ``{"output": ...}``.
* ``GET  /v2/{eid}/ping/{worker}?...&job_id=a,b&runpod_version=...`` — heartbeat.
* ``GET  /v2/{eid}/job-stop/{worker}`` — long-poll: ``{"jobsToStop": [ids]}`` when a job the
  worker runs was cancelled or timed out, else 204.

A draining worker (SIGTERM sent) gets no more jobs; its polls are answered within a second so its
loop can see the signal and wind down.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from ..protocol import wire
from .jobs import Job
from .runtime import PlatformRuntime
from .serverless import ApiError, JSONResponse
from .state import EndpointState
from .supervisor import Worker, WorkerState

DRAINING_HOLD_S = 1.0  # poll hold for draining workers: long enough not to spin, short to exit
NO_CONTENT = 204
OK = b"{}"


def _job_body(job: Job) -> bytes:
    # The stored input is JSON text already: splice it in rather than re-encoding it. LOCAL:
    # ``requestId``, the submit's X-Request-ID, which our job loop follows (the official one
    # ignores it).
    body = b'{"id":' + orjson.dumps(job.id) + b',"input":' + job.input
    if job.request_id is not None:
        body += b',"requestId":' + orjson.dumps(job.request_id)
    return body + b"}"


async def _until_disconnect(receive: Callable[[], Awaitable[Any]]) -> None:
    """Return when the client closes the connection (the request has no body to read)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class WorkerAPI:
    """Handlers of the worker protocol."""

    def __init__(self, runtime: PlatformRuntime) -> None:
        self.runtime = runtime
        self.jobs = runtime.jobs
        self.key_text = runtime.worker_key

    def routes(self) -> list[BaseRoute]:
        prefix = "/v2/{endpoint_id}"
        return [
            Route(f"{prefix}/{wire.JOB_TAKE}/{{worker_id}}", self.take, methods=["GET"]),
            Route(
                f"{prefix}/{wire.JOB_TAKE_BATCH}/{{worker_id}}", self.take_batch, methods=["GET"]
            ),
            Route(
                f"{prefix}/{wire.JOB_DONE}/{{worker_id}}/{{job_id}}", self.done, methods=["POST"]
            ),
            Route(
                f"{prefix}/{wire.JOB_STREAM}/{{worker_id}}/{{job_id}}",
                self.stream,
                methods=["POST"],
            ),
            Route(f"{prefix}/{wire.PING}/{{worker_id}}", self.ping, methods=["GET"]),
            Route(f"{prefix}/{wire.JOB_STOP}/{{worker_id}}", self.stop, methods=["GET"]),
        ]

    def _worker(self, request: Request) -> tuple[EndpointState, Worker]:
        """The calling worker. A worker the platform started holds a key of its own, good for
        its id on its endpoint only; the platform-wide worker key (never given to a worker)
        serves external workers, e.g. a debugger attached by hand."""
        header = request.headers.get("authorization")
        endpoint_id = request.path_params["endpoint_id"]
        worker_id = request.path_params["worker_id"]
        own = self.runtime.worker_by_key(wire.bearer_token(header))
        if own is None and not wire.key_matches(header, self.key_text):
            raise ApiError(401, "unauthorized: not a worker key of this platform")
        if own is not None and (own.id != worker_id or own.endpoint_id != endpoint_id):
            raise ApiError(403, "forbidden: this key belongs to another worker")
        ep = self.runtime.endpoint(endpoint_id)
        if ep is None or ep.spec.type != "qb":
            raise ApiError(404, f"queue endpoint {endpoint_id!r} not found")
        return ep, self.runtime.worker(ep, worker_id)

    @staticmethod
    def _check_holder(job: Job, worker: Worker, *, running: bool) -> None:
        """Only a worker the job was handed to may post its result (however late: the first
        result wins), and only the one running it may stream into it; for a finished job
        either is dropped anyway."""
        allowed = job.final or (job.worker_id == worker.id if running else worker.id in job.holders)
        if not allowed:
            what = "is not running on" if running else "was never handed to"
            raise ApiError(403, f"forbidden: job {job.id} {what} this worker")

    async def take(self, request: Request) -> Response:
        return await self._take(request, 1, batch=False)

    async def take_batch(self, request: Request) -> Response:
        raw = request.query_params.get("batch_size", "1")
        return await self._take(request, max(1, int(raw)) if raw.isdigit() else 1, batch=True)

    async def _take(self, request: Request, limit: int, *, batch: bool) -> Response:
        ep, worker = self._worker(request)
        if worker.state is WorkerState.STARTING:
            self.runtime.worker_ready(ep, worker)
        hold = self.runtime.settings.long_poll_s
        if not worker.serving:
            await asyncio.sleep(DRAINING_HOLD_S)
            return Response(status_code=NO_CONTENT)
        # A job handed to a poll whose worker already hung up would sit leased to a live
        # worker that never saw it: watch the connection and stop taking once it is gone.
        gone = asyncio.ensure_future(_until_disconnect(request.receive))
        gone.add_done_callback(lambda task: self._hung_up(task, worker))
        try:
            taken = await self.jobs.take(
                ep.id,
                worker.id,
                limit,
                hold,
                lambda: worker.serving and not gone.done(),
            )
        finally:
            gone.cancel()
        if not taken:
            return Response(status_code=NO_CONTENT)
        worker.last_active = time.monotonic()
        if batch:
            body = b"[" + b",".join(_job_body(job) for job in taken) + b"]"
        else:
            body = _job_body(taken[0])
        return Response(body, media_type="application/json")

    def _hung_up(self, task: asyncio.Future[None], worker: Worker) -> None:
        if not task.cancelled():
            self.jobs.release_parked(worker.id)

    async def done(self, request: Request) -> Response:
        ep, worker = self._worker(request)
        body = await request.body()
        try:
            result = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError as err:
            raise ApiError(400, f"job-done body is not JSON: {err}") from None
        job_id = request.path_params["job_id"]
        existing = self.jobs.get(job_id)
        if existing is not None and existing.endpoint_id == ep.id:
            self._check_holder(existing, worker, running=False)
            self.jobs.finish(worker.id, job_id, result)
        worker.last_active = time.monotonic()
        if isinstance(result, dict) and result.get("stopPod"):
            self.runtime.refresh_worker(worker)
        # Always 200: a dropped late result must not make the SDK retry.
        return Response(OK, media_type="application/json")

    async def stream(self, request: Request) -> Response:
        ep, worker = self._worker(request)
        body = await request.body()
        try:
            chunk = orjson.loads(body) if body else None
        except orjson.JSONDecodeError as err:
            raise ApiError(400, f"job-stream body is not JSON: {err}") from None
        job_id = request.path_params["job_id"]
        existing = self.jobs.get(job_id)
        if existing is not None and existing.endpoint_id == ep.id:
            self._check_holder(existing, worker, running=True)
            try:
                self.jobs.add_chunk(job_id, chunk)
            except orjson.JSONEncodeError as err:
                raise ApiError(400, f"job-stream chunk cannot be stored as JSON: {err}") from None
        worker.last_active = time.monotonic()
        return Response(OK, media_type="application/json")

    async def ping(self, request: Request) -> Response:
        _, worker = self._worker(request)
        query = request.query_params
        # The runpod SDK's pings (and ours) always carry runpod_version and list the jobs in
        # progress in job_id (left out when there are none); other clients are not checked.
        if "runpod_version" in query:
            reported = query.get("job_id") or ""
            self.runtime.reconcile(worker, {i for i in reported.split(",") if i})
        return Response(OK, media_type="application/json")

    async def stop(self, request: Request) -> Response:
        _, worker = self._worker(request)
        hold = self.runtime.settings.long_poll_s if worker.serving else DRAINING_HOLD_S
        ids = await worker.next_stops(hold)
        if ids:
            return JSONResponse({"jobsToStop": ids})
        return Response(status_code=NO_CONTENT)


def routes(runtime: PlatformRuntime) -> list[BaseRoute]:
    """The worker protocol routes (mounted by ``server.py``)."""
    return WorkerAPI(runtime).routes()
