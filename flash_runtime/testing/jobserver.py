"""A loopback stand-in for Runpod's worker job API, strict about the protocol.

:class:`JobServer` runs an aiohttp server on its own thread and event loop, so a worker under
test (a real bootstrap process, or a job loop on another thread) talks to it over real HTTP. It
speaks the production protocol of the ``runpod`` 1.12 worker: job-take and job-take-batch
long-polls (held until a job is queued or ``hold`` seconds pass, then 204), job-done,
job-stream, ping and the job-stop long-poll. It records every request and checks each against
the protocol (placeholders, query parameters, headers, auth, body shapes); anything off is
appended to :attr:`JobServer.violations`, which tests assert is empty.

Tests drive it from their own thread: :meth:`submit` queues a job, :meth:`wait` blocks until the
job's result arrives (or it is stopped), :meth:`stop_job` asks the worker to stop a job,
:meth:`fail_done_posts` makes the next job-done POSTs answer 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

from aiohttp import web

from flash_runtime.manifest import FunctionEntry, Manifest, Resource, interpreter_version
from flash_runtime.worker.loader import LoadedResource, load_resource

API_KEY = "rp-test-key"
ENDPOINT_ID = "ep-test"
GPU_QUERY = "gpu=TEST_GPU"  # the query every production webhook template already carries

T = TypeVar("T")


@dataclass
class Recorded:
    """One request the server received."""

    method: str
    kind: str  # job-take, job-take-batch, job-done, job-stream, ping, job-stop
    path: str
    raw_query: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: str
    at: float

    def param(self, name: str) -> str | None:
        return next((v for k, v in self.query if k == name), None)


@dataclass
class Job:
    """A job's life on the server."""

    id: str
    input: Any
    state: str = "queued"  # queued, running, done, stopped
    worker: str | None = None
    taken_at: float | None = None
    done_at: float | None = None
    result: dict[str, Any] | None = None
    is_stream: bool | None = None
    chunks: list[Any] = field(default_factory=list)
    done_posts: int = 0  # job-done POSTs received, failed ones included
    stop_requested: bool = False


class JobServer:
    """The worker side of the Runpod job API on 127.0.0.1, for one endpoint."""

    def __init__(self, *, hold: float = 2.0, api_key: str = API_KEY, delay: float = 0.0) -> None:
        """``hold``: how long a long-poll is held; ``delay``: one-way network latency in
        seconds, as between a Runpod worker and its job server (every request is handled
        ``delay`` after it was sent, and its answer reaches the worker ``delay`` later)."""
        self.hold = hold
        self.delay = delay
        self.api_key = api_key
        self.jobs: dict[str, Job] = {}
        self.requests: list[Recorded] = []
        self.violations: list[str] = []
        self.port = 0
        self._queue: deque[str] = deque()
        self._fail_done: list[int] = []  # statuses for the next job-done POSTs
        self._ids = itertools.count(1)
        self._cond = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._changed: asyncio.Condition | None = None
        self._runner: web.AppRunner | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._serve, name="jobserver", daemon=True)
        self._ready = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> Self:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("job server did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def worker_env(self, worker_id: str = "worker-1", *, ping_ms: int = 300) -> dict[str, str]:
        """The ``RUNPOD_*`` variables the platform gives a worker of this endpoint."""
        base = f"{self.url}/v2/{ENDPOINT_ID}"
        return {
            "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID?{GPU_QUERY}",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID?{GPU_QUERY}",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$RUNPOD_POD_ID/$ID?{GPU_QUERY}",
            "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID?{GPU_QUERY}",
            "RUNPOD_AI_API_KEY": self.api_key,
            "RUNPOD_POD_ID": worker_id,
            "RUNPOD_PING_INTERVAL": str(ping_ms),
        }

    # -- what tests call (from their own thread) ------------------------------------------

    def submit(self, job_input: Any, job_id: str | None = None) -> str:
        """Queue a job; returns its id."""
        job_id = job_id or f"job-{next(self._ids)}"
        with self._cond:
            self.jobs[job_id] = Job(job_id, job_input)
        asyncio.run_coroutine_threadsafe(self._enqueue(job_id), self._loop).result(5)
        return job_id

    def wait(self, job_id: str, timeout: float = 20) -> Job:
        """The job once its result has arrived or its stop was delivered."""
        return self.wait_until(
            lambda: self.jobs[job_id] if self.jobs[job_id].state in ("done", "stopped") else None,
            timeout,
            f"job {job_id} to finish",
        )

    def wait_running(self, job_id: str, timeout: float = 20) -> Job:
        return self.wait_until(
            lambda: self.jobs[job_id] if self.jobs[job_id].state != "queued" else None,
            timeout,
            f"job {job_id} to be taken",
        )

    def wait_reported(self, job_id: str, timeout: float = 20) -> None:
        """Block until a ping of the worker lists ``job_id`` (so the worker surely has it)."""
        self.wait_until(
            lambda: any(
                job_id in (r.param("job_id") or "").split(",")
                for r in self.requests
                if r.kind == "ping"
            ),
            timeout,
            f"a ping reporting job {job_id}",
        )

    def wait_until(self, probe: Callable[[], T | None], timeout: float = 20, what: str = "it") -> T:
        """Block until ``probe()`` (called under the server's lock) returns something truthy."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not (value := probe()):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"timed out waiting for {what}")
                self._cond.wait(left)
            return value

    def stop_job(self, job_id: str) -> None:
        """Tell the worker running ``job_id`` to stop it (through its job-stop long-poll)."""
        asyncio.run_coroutine_threadsafe(self._request_stop(job_id), self._loop).result(5)

    def fail_done_posts(self, count: int = 1, status: int = 500) -> None:
        """Answer the next ``count`` job-done POSTs with ``status`` and drop their results."""
        with self._cond:
            self._fail_done.extend([status] * count)

    def recorded(self, kind: str) -> list[Recorded]:
        with self._cond:
            return [r for r in self.requests if r.kind == kind]

    # -- the server (its own thread and loop) ---------------------------------------------

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _start(self) -> None:
        self._changed = asyncio.Condition()
        app = web.Application(middlewares=[self._record])
        prefix = f"/v2/{ENDPOINT_ID}"
        app.router.add_get(prefix + "/job-take/{worker}", self._job_take)
        app.router.add_get(prefix + "/job-take-batch/{worker}", self._job_take)
        app.router.add_get(prefix + "/job-stop/{worker}", self._job_stop)
        app.router.add_post(prefix + "/job-done/{worker}/{job}", self._job_done)
        app.router.add_post(prefix + "/job-stream/{worker}/{job}", self._job_stream)
        app.router.add_get(prefix + "/ping/{worker}", self._ping)
        # handler_cancellation: a worker abandoning a long-poll must not be handed a job.
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()

    async def _shutdown(self) -> None:
        self._closing = True
        await self._notify()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _notify(self) -> None:
        assert self._changed is not None
        async with self._changed:
            self._changed.notify_all()
        with self._cond:
            self._cond.notify_all()

    async def _enqueue(self, job_id: str) -> None:
        self._queue.append(job_id)
        await self._notify()

    async def _request_stop(self, job_id: str) -> None:
        with self._cond:
            self.jobs[job_id].stop_requested = True
        await self._notify()

    async def _wait_for(self, probe: Callable[[], Any]) -> Any:
        """Long-poll: ``probe()`` once it is truthy, or None after ``hold`` seconds."""
        assert self._changed is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.hold), self._changed:
                await self._changed.wait_for(lambda: self._closing or probe())
        return None if self._closing else probe()

    def _violation(self, request: web.Request, problem: str) -> None:
        with self._cond:
            self.violations.append(f"{request.method} {request.path_qs}: {problem}")

    @web.middleware
    async def _record(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        if self.delay:
            await asyncio.sleep(self.delay)  # the request on its way here
        kind = request.path.split("/")[3] if request.path.count("/") >= 4 else "?"
        body = await request.text()
        with self._cond:
            self.requests.append(
                Recorded(
                    request.method,
                    kind,
                    request.path,
                    request.query_string,
                    list(request.query.items()),
                    dict(request.headers),
                    body,
                    time.time(),
                )
            )
            self._cond.notify_all()
        if request.headers.get("Authorization") != self.api_key:
            self._violation(request, f"Authorization is {request.headers.get('Authorization')!r}")
            return web.Response(status=401)
        if request.query.get("gpu") != "TEST_GPU":
            self._violation(request, "the webhook template's own query (gpu=...) was lost")
        worker = request.match_info.get("worker", "")
        if "$" in worker or "$" in request.match_info.get("job", ""):
            self._violation(request, "a $ placeholder was not replaced")
        if kind != "ping" and not request.headers.get("User-Agent", "").startswith(
            "RunPod-Python-SDK/"
        ):
            self._violation(request, f"User-Agent is {request.headers.get('User-Agent')!r}")
        response: web.StreamResponse = await handler(request)
        if self.delay:
            await asyncio.sleep(self.delay)  # the answer on its way back
        return response

    def _running_on(self, worker: str) -> list[Job]:
        return [j for j in self.jobs.values() if j.state == "running" and j.worker == worker]

    async def _job_take(self, request: web.Request) -> web.StreamResponse:
        worker = request.match_info["worker"]
        batch = request.path.split("/")[3] == "job-take-batch"
        raw = request.query_string
        in_progress = request.query.get("job_in_progress")
        if in_progress not in ("0", "1") or not raw.endswith(f"&job_in_progress={in_progress}"):
            self._violation(request, "job_in_progress=0|1 must be appended last")
        elif in_progress == "0" and self._running_on(worker):
            self._violation(request, "job_in_progress=0 while the worker has jobs running")
        if batch:
            size = request.query.get("batch_size", "")
            if not size.isdigit() or int(size) < 2 or f"&batch_size={size}&" not in raw:
                self._violation(
                    request, f"batch_size={size!r} must be >1 and precede job_in_progress"
                )
                return web.Response(status=400)
            count = int(size)
        else:
            if "batch_size" in request.query:
                self._violation(request, "batch_size on the single job-take")
            count = 1
        if not await self._wait_for(lambda: self._queue):
            return web.Response(status=204)
        taken = [self._queue.popleft() for _ in range(min(count, len(self._queue)))]
        transport = request.transport
        if transport is None or transport.is_closing():  # the worker gave up on this poll
            self._queue.extendleft(reversed(taken))
            return web.Response(status=204)
        now = time.time()
        with self._cond:
            for job_id in taken:
                job = self.jobs[job_id]
                job.state, job.worker, job.taken_at = "running", worker, now
            self._cond.notify_all()
        payload = [{"id": j, "input": self.jobs[j].input} for j in taken]
        return web.json_response(payload if batch else payload[0])

    async def _job_stop(self, request: web.Request) -> web.StreamResponse:
        worker = request.match_info["worker"]
        if request.query_string != GPU_QUERY:
            self._violation(request, "job-stop must poll the job-take URL as is")

        def to_stop() -> list[str]:
            return [j.id for j in self._running_on(worker) if j.stop_requested]

        ids = await self._wait_for(to_stop)
        if not ids:
            return web.Response(status=204)
        with self._cond:
            for job_id in ids:
                self.jobs[job_id].state = "stopped"
            self._cond.notify_all()
        return web.json_response({"jobsToStop": ids})

    def _check_post(self, request: web.Request, body: str, is_stream: str) -> Job | None:
        headers = request.headers
        job_id = request.match_info["job"]
        if headers.get("Content-Type") != "application/x-www-form-urlencoded":
            self._violation(request, f"Content-Type is {headers.get('Content-Type')!r}")
        if headers.get("charset") != "utf-8":
            self._violation(request, "no 'charset: utf-8' header")
        if headers.get("X-Request-ID") != job_id:
            self._violation(request, f"X-Request-ID is {headers.get('X-Request-ID')!r}")
        if not request.query_string.endswith(f"&isStream={is_stream}"):
            self._violation(request, f"isStream={request.query.get('isStream')!r} appended last")
        job = self.jobs.get(job_id)
        if job is None or job.worker != request.match_info["worker"]:
            self._violation(request, "a post for a job this worker was not given")
            return None
        try:
            json.loads(body)
        except ValueError:
            self._violation(request, "the body is not JSON")
            return None
        return job

    async def _job_done(self, request: web.Request) -> web.StreamResponse:
        body = await request.text()
        stream = request.query.get("isStream", "")
        job = self._check_post(request, body, stream if stream in ("true", "false") else "?")
        if job is None:
            return web.Response(status=404)
        with self._cond:
            job.done_posts += 1
            if self._fail_done:
                return web.Response(status=self._fail_done.pop(0))
            if job.state == "done":
                self.violations.append(f"job {job.id}: a second result was posted")
            elif job.state == "stopped":
                self.violations.append(f"job {job.id}: a result was posted after it was stopped")
            job.state, job.done_at = "done", time.time()
            job.result, job.is_stream = json.loads(body), stream == "true"
            self._cond.notify_all()
        return web.json_response({})

    async def _job_stream(self, request: web.Request) -> web.StreamResponse:
        body = await request.text()
        job = self._check_post(request, body, "false")
        if job is None:
            return web.Response(status=404)
        payload = json.loads(body)
        with self._cond:
            if job.state != "running":
                self.violations.append(f"job {job.id}: a chunk arrived after its result")
            if not isinstance(payload, dict) or set(payload) != {"output"}:
                self.violations.append(f"job {job.id}: a chunk is not {{'output': ...}}")
            else:
                job.chunks.append(payload["output"])
            self._cond.notify_all()
        return web.json_response({})

    async def _ping(self, request: web.Request) -> web.StreamResponse:
        if not request.query.get("runpod_version"):
            self._violation(request, "no runpod_version")
        with self._cond:
            for job_id in (request.query.get("job_id") or "").split(","):
                if job_id and job_id not in self.jobs:
                    self.violations.append(f"ping names unknown job {job_id!r}")
        return web.Response(status=200)


def pinged_ids(server: JobServer) -> Iterator[set[str]]:
    """The job ids each recorded ping reported, oldest first."""
    for ping in server.recorded("ping"):
        yield set(filter(None, (ping.param("job_id") or "").split(",")))


def results(server: JobServer, ids: Mapping[str, str], timeout: float = 20) -> dict[str, Any]:
    """``{name: result}`` for jobs submitted as ``{name: job_id}``."""
    return {name: server.wait(job_id, timeout).result for name, job_id in ids.items()}


def load_queue_resource(
    module: str, name: str, *, max_concurrency: int = 1, is_class: bool = False
) -> LoadedResource:
    """Load ``module.name`` with the worker's loader as the one function of a queue resource.

    For in-process tests of functions defined in a test module (already imported, so the
    loader's import finds it), without building an artifact.
    """
    entry = FunctionEntry(name=name, module=module, is_async=False, is_class=is_class)
    resource = Resource(
        resource_type="CpuLiveServerless",
        file_path=f"{module}.py",
        module_path=module,
        functions=[entry],
        is_load_balanced=False,
        max_concurrency=max_concurrency,
    )
    manifest = Manifest(
        version="1.0",
        python_version=interpreter_version(),
        generated_at="",
        project_name="tests",
        resources={"qb": resource},
        function_registry={name: "qb"},
    )
    # The loader sets FLASH_RESOURCE_NAME for the worker process; keep it out of this one.
    previous = os.environ.get("FLASH_RESOURCE_NAME")
    try:
        return load_resource(Path(__file__).parent, manifest, "qb")
    finally:
        if previous is None:
            os.environ.pop("FLASH_RESOURCE_NAME", None)
        else:
            os.environ["FLASH_RESOURCE_NAME"] = previous
