"""Our job loop: the ``runpod`` 1.12 worker protocol, spoken without the official loop's idling.

The protocol (what the platform sees) is the official worker's, request for request:

* **job-take**: ``GET $RUNPOD_WEBHOOK_GET_JOB`` with ``$ID`` replaced by the worker id
  (``RUNPOD_POD_ID``) and ``&job_in_progress=0|1`` appended. With more than one free slot it asks
  for that many jobs at once: ``/job-take/`` becomes ``/job-take-batch/`` and
  ``&batch_size=N`` comes before ``&job_in_progress``. The server holds the request until it has
  work (long-poll). 204 and 400 mean no job, 429 means slow down; the answer is a job object
  ``{"id", "input", ...}`` or a list of them.
* **job-done**: ``POST $RUNPOD_WEBHOOK_POST_OUTPUT`` with ``$RUNPOD_POD_ID`` and ``$ID`` (the job
  id) replaced and ``&isStream=true|false`` appended; the body is the result as JSON text, sent
  as ``application/x-www-form-urlencoded`` with a ``charset: utf-8`` header and
  ``X-Request-ID: <job id>``.
* **job-stream**: each chunk of a generator, ``{"output": chunk}``, is POSTed the same way to
  ``$RUNPOD_WEBHOOK_POST_STREAM`` (with ``&isStream=false``, as the official worker sends it).
* **ping**: ``GET $RUNPOD_WEBHOOK_PING`` every ``RUNPOD_PING_INTERVAL`` ms with ``job_id`` (the
  in-progress job ids, comma-joined; left out when there are none) and ``runpod_version``.
* **job-stop**: a long-poll ``GET`` on the job-take URL with ``/job-take/`` replaced by
  ``/job-stop/``; ``{"jobsToStop": [...]}`` names jobs to stop.

Every request carries ``Authorization: <RUNPOD_AI_API_KEY>`` (the raw key), ``Content-Type:
application/json`` (overridden for posts) and a ``RunPod-Python-SDK/...`` style User-Agent.

What differs is the pacing, and it is why this loop exists:

* A slot that frees is filled at once: the next job-take starts the moment a job's function
  returns, beside the post of its result (the official loop sleeps a full second whenever its
  slots are full), so over a network a job costs one round trip, not two. While all slots are
  busy no job-take is in flight; results still being delivered hold no slot, but no more than
  ``slots`` of them may wait at once (then the next take waits for a delivery).
* Failed polls back off exponentially with jitter (capped), 429 at least as long as the official
  five seconds, instead of retrying at once; an empty answer the server did not hold (not a
  long-poll) is followed by a short, growing pause, so an instant-204 server cannot cause a hot
  loop.
* A result (and each streamed chunk) is kept until the server acknowledges it: connection
  errors, timeouts, 408, 429 and 5xx are retried with backoff for up to ten minutes (then logged
  as lost). The job stays "in progress" (in pings, in its slot) until then, so the platform does
  not give up on it meanwhile. Another 4xx means the server will never take it: no retry.
* A result that is not JSON-serialisable becomes an error result saying so, rather than being
  dropped.

Stopping a job (job-stop) cancels its task: an async function is interrupted at its next
``await`` and a generator between two chunks. A plain function running in a worker thread cannot
be interrupted: the job is reported stopped at once (it leaves the pinged ``job_id`` list) but
its thread runs to the end, holding its slot, and its result is discarded. A stopped job posts no
result, like the official worker; the platform already knows it stopped it. A stop for a job
whose job-take answer is still on its way is remembered for a minute, and the job is not run.

Shutting down (:meth:`JobLoop.stop`): the job-take poll in flight is abandoned and no new one
starts; in-flight jobs run to the end and their results are delivered (still stoppable through
job-stop, still pinged), then :meth:`JobLoop.run` returns 0. ``stop(force=True)`` also cancels the
in-flight jobs. A job the server hands out in the very instant a poll is abandoned is not run
here; the platform notices it missing from the pings and treats it as it treats a lost worker.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import platform
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..errors import FlashError
from ..protocol import wire
from . import request_context
from .config import WorkerConfig
from .handler import Handler, Result, error_result, json_default, runpod_version

log = logging.getLogger("flash_runtime.worker.queue")

POLL_TIMEOUT = 90.0  # seconds a job-take or job-stop long-poll may be held (the official bound)
POST_TIMEOUT = 30.0  # seconds one attempt to post a result or chunk may take
DELIVERY_DEADLINE = 600.0  # seconds to keep retrying a result before declaring it lost
BACKOFF_BASE = 0.5  # seconds; doubles per consecutive failure
BACKOFF_CAP = 30.0
TOO_MANY_REQUESTS_FLOOR = 5.0  # the official worker's debounce after a 429
EMPTY_FLOOR = 0.05  # first pause after an empty answer that was not long-polled; doubles
EMPTY_CAP = 1.0
HELD = 0.5  # an empty answer slower than this was long-polled: poll again at once
EARLY_STOP_MEMORY = 60.0  # seconds a stop for a job not running here is remembered

RESULT_HEADERS = {"charset": "utf-8", "Content-Type": "application/x-www-form-urlencoded"}


class TooManyRequests(Exception):
    """The server answered 429."""


class ProtocolError(Exception):
    """The server answered something the worker protocol does not allow."""


def user_agent(env: Mapping[str, str]) -> str:
    """A User-Agent in the official SDK's form, with our integration named."""
    integration = env.get("RUNPOD_UA_INTEGRATION") or "flash-runtime"
    return (
        f"RunPod-Python-SDK/{runpod_version()} "
        f"({platform.system()} {platform.release()}; {platform.machine()}) "
        f"Language/Python {platform.python_version()} Integration/{integration}"
    )


@dataclass(frozen=True)
class JobURLs:
    """The worker protocol's endpoints and credentials, placeholders filled in."""

    worker_id: str
    api_key: str
    job_take: str
    job_done: str
    job_stream: str | None = None
    ping: str | None = None
    ping_interval: float = 10.0
    user_agent: str = ""

    @classmethod
    def from_config(cls, config: WorkerConfig) -> JobURLs:
        """From the ``RUNPOD_*`` variables, as the official worker reads them."""
        if not config.webhook_get_job or not config.webhook_post_output:
            raise FlashError(
                "a queue worker needs RUNPOD_WEBHOOK_GET_JOB and RUNPOD_WEBHOOK_POST_OUTPUT (the "
                "platform sets them); to run a function locally use `flash run` instead"
            )
        worker_id = config.pod_id or str(uuid.uuid4())
        # The official worker pings only when it knows its key and pod id.
        ping = config.webhook_ping if config.ai_api_key and config.pod_id else None
        return cls(
            worker_id=worker_id,
            api_key=config.ai_api_key or "",
            job_take=config.webhook_get_job.replace("$ID", worker_id),
            job_done=config.webhook_post_output.replace("$RUNPOD_POD_ID", worker_id),
            job_stream=(
                config.webhook_post_stream.replace("$RUNPOD_POD_ID", worker_id)
                if config.webhook_post_stream
                else None
            ),
            ping=ping.replace("$RUNPOD_POD_ID", worker_id) if ping else None,
            ping_interval=max(config.ping_interval_ms, 100) / 1000,
            user_agent=user_agent(config.env or os.environ),
        )

    @property
    def headers(self) -> dict[str, str]:
        """The headers of every request (the official worker's session headers)."""
        return {
            "Content-Type": "application/json",
            "Authorization": self.api_key,
            "User-Agent": self.user_agent,
            "Accept-Encoding": "gzip, deflate",
        }

    def take_url(self, count: int, in_progress: bool) -> str:
        url = self.job_take
        if count > 1:
            url = url.replace(f"/{wire.JOB_TAKE}/", f"/{wire.JOB_TAKE_BATCH}/")
            url += f"&batch_size={count}"
        return url + f"&job_in_progress={'1' if in_progress else '0'}"

    @property
    def stop_url(self) -> str | None:
        if f"/{wire.JOB_TAKE}/" not in self.job_take:
            return None
        return self.job_take.replace(f"/{wire.JOB_TAKE}/", f"/{wire.JOB_STOP}/")

    def done_url(self, job_id: str, is_stream: bool) -> str:
        return (
            self.job_done.replace("$ID", job_id) + f"&isStream={'true' if is_stream else 'false'}"
        )

    def stream_url(self, job_id: str) -> str:
        if self.job_stream is None:
            raise FlashError(
                "this generator's chunks cannot be streamed: RUNPOD_WEBHOOK_POST_STREAM is not set"
            )
        return self.job_stream.replace("$ID", job_id) + "&isStream=false"


class Pacer:
    """How long to wait before the next poll.

    Nothing after work or after a long-polled empty answer; a short pause, doubling up to a
    second, after empty answers that came back at once; exponential backoff with jitter, capped,
    after failures.
    """

    def __init__(self) -> None:
        self.failures = 0
        self.empty = 0.0

    def answered(self, got_work: bool, seconds: float) -> float:
        self.failures = 0
        if got_work or seconds >= HELD:
            self.empty = 0.0
            return 0.0
        self.empty = min(EMPTY_CAP, self.empty * 2 or EMPTY_FLOOR)
        return self.empty

    def failed(self, floor: float = 0.0) -> float:
        self.failures += 1
        return max(floor, backoff(self.failures))


def backoff(attempt: int) -> float:
    """Exponential backoff with jitter: about 0.5 s, 1 s, 2 s ... up to 30 s."""
    delay: float = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1))
    return delay * random.uniform(0.5, 1.0)


class JobLoop:
    """Takes jobs and runs them through a :class:`Handler`, ``handler.slots`` at a time."""

    def __init__(
        self,
        protocol: JobURLs,
        handler: Handler,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``clock`` (seconds, monotonic; default: the event loop's) and ``sleep`` time every
        poll, pause, retry and heartbeat: tests pass their own to run the pacing without
        waiting."""
        self.protocol = protocol
        self.handler = handler
        self._clock = clock
        self._sleep = sleep
        self.slots = handler.slots
        self._jobs: dict[str, asyncio.Task[None]] = {}  # running or delivering its result
        self._running: set[str] = set()  # of those, the ones whose function has not returned
        self._stopped: set[str] = set()  # jobs the server told us to stop
        self._early_stops: dict[str, float] = {}  # stops for jobs not (yet) here -> when
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._forced = False

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    @property
    def in_progress(self) -> list[str]:
        """The ids of the jobs running here (stopped ones excluded)."""
        return [job_id for job_id in self._jobs if job_id not in self._stopped]

    def stop(self, *, force: bool = False) -> None:
        """Take no more jobs and return from :meth:`run` once in-flight jobs are done.

        With ``force``, in-flight jobs are cancelled too and their results not sent. Call it on
        the loop's thread (``loop.call_soon_threadsafe`` from elsewhere).
        """
        self._stopping.set()
        if force:
            self._forced = True
            for task in self._jobs.values():
                task.cancel()

    async def run(self) -> int:
        """Serve until :meth:`stop`; 0 after a clean stop, 1 after a forced one or a breakdown."""
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(
            connector=connector, headers=self.protocol.headers, timeout=timeout
        ) as session:
            self._session = session
            taking = asyncio.create_task(self._take_loop(), name="job-take")
            background = [
                asyncio.create_task(self._stop_loop(), name="job-stop"),
                asyncio.create_task(self._ping_loop(), name="ping"),
            ]
            stopping = asyncio.create_task(self._stopping.wait())
            code = 0
            watched = {stopping, taking, *background}
            while not self.stopping:
                done, watched = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                for task in done - {stopping}:
                    # A loop that ends without an error had nothing to do (no ping URL, say).
                    if (err := task.exception()) is not None:
                        log.critical("the %s loop broke; stopping", task.get_name(), exc_info=err)
                        code = 1
                        self._stopping.set()
            taking.cancel()
            if self._jobs:
                log.info("waiting for %d in-flight job(s) to finish", len(self._jobs))
            while self._jobs:
                if self._forced:  # a job may have arrived between stop() and now
                    for task in self._jobs.values():
                        task.cancel()
                await asyncio.wait(list(self._jobs.values()))
            for task in [stopping, *background]:
                task.cancel()
            await asyncio.gather(taking, stopping, *background, return_exceptions=True)
        return 1 if self._forced else code

    # -- taking jobs ------------------------------------------------------------------------

    async def _take_loop(self) -> None:
        pacer = Pacer()
        clock = self._clock or asyncio.get_running_loop().time
        while True:
            delivering = len(self._jobs) - len(self._running)
            free = self.slots - len(self._running) if delivering <= self.slots else 0
            if free <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            started = clock()
            try:
                jobs = await self._take(free)
            except TooManyRequests:
                delay = pacer.failed(TOO_MANY_REQUESTS_FLOOR)
                log.warning("job-take: 429 too many requests; next poll in %.1fs", delay)
            except (aiohttp.ClientError, TimeoutError, ProtocolError, ValueError) as err:
                delay = pacer.failed()
                log.warning("job-take failed (%s); next poll in %.1fs", _describe(err), delay)
            else:
                for job in jobs:
                    self._start(job)
                delay = pacer.answered(bool(jobs), clock() - started)
            if delay:
                await self._sleep(delay)

    async def _take(self, count: int) -> list[Any]:
        assert self._session is not None
        url = self.protocol.take_url(count, bool(self._jobs))
        timeout = aiohttp.ClientTimeout(total=POLL_TIMEOUT)
        async with self._session.get(url, timeout=timeout) as response:
            if response.status in (204, 400):  # 400: no job, as FlashBoot workers see it
                return []
            if response.status == 429:
                raise TooManyRequests()
            response.raise_for_status()
            if response.content_type != "application/json":
                raise ProtocolError(f"job-take answered {response.content_type}, not JSON")
            body = await response.read()
        if not body:
            return []
        jobs = json.loads(body)
        if isinstance(jobs, dict):
            if "id" not in jobs or "input" not in jobs:
                raise ProtocolError("job-take answered a job without an id or input")
            return [jobs]
        if not isinstance(jobs, list):
            raise ProtocolError(f"job-take answered a JSON {type(jobs).__name__}")
        return jobs

    def _start(self, job: Any) -> None:
        job_id = job.get("id") if isinstance(job, dict) else None
        if not isinstance(job_id, str) or not job_id:
            log.error("job-take answered a job without a string id; skipping it: %.200r", job)
            return
        if job_id in self._jobs:
            log.warning("job %s was handed out again while it runs here; ignoring the copy", job_id)
            return
        if self._early_stops.pop(job_id, None) is not None:
            log.info("job %s was stopped before it started; not running it", job_id)
            return
        if len(self._jobs) >= self.slots:
            log.warning("job-take answered more jobs than asked for; running job %s anyway", job_id)
        task = asyncio.create_task(self._run_job(job_id, job), name=f"job {job_id}")
        self._jobs[job_id] = task
        self._running.add(job_id)
        # Clean up in a done-callback, not in the coroutine: a task cancelled before its first
        # step never runs its body (a stop can arrive in the same loop tick as the job).
        task.add_done_callback(functools.partial(self._finished, job_id))

    def _finished(self, job_id: str, task: asyncio.Task[None]) -> None:
        del self._jobs[job_id]
        self._running.discard(job_id)
        stopped = job_id in self._stopped
        self._stopped.discard(job_id)
        self._slot_freed.set()
        if task.cancelled():
            log.info("job %s %s", job_id, "stopped" if stopped else "cancelled")
        elif (err := task.exception()) is not None:
            log.error("job %s broke the job loop", job_id, exc_info=err)

    # -- running a job ----------------------------------------------------------------------

    async def _run_job(self, job_id: str, job: dict[str, Any]) -> None:
        # Lines logged or printed while the job runs start with its id (a task per job), and
        # the request id it was submitted with (the local platform's requestId), which its
        # cross-endpoint calls carry on.
        request_context.current.set(job_id)
        request_context.is_job.set(True)
        submitted = job.get("requestId")
        if isinstance(submitted, str) and submitted:
            request_context.request.set(submitted)
        started = time.perf_counter()
        result = await self._outcome(job_id, job)
        # Its slot is free for the next job-take now, while the result is on its way.
        self._running.discard(job_id)
        self._slot_freed.set()
        body = self._encode(job_id, result)
        url = self.protocol.done_url(job_id, self.handler.is_generator)
        if await self._post(url, body, job_id, "result"):
            log.info("job %s done in %.3fs", job_id, time.perf_counter() - started)

    async def _outcome(self, job_id: str, job: dict[str, Any]) -> Result:
        """The job's result; a failure of ours (not the function's) becomes an error result."""
        try:
            if self.handler.is_generator:
                send = functools.partial(self._send_chunk, job_id)
                return await self.handler.stream_result(job, send)
            return await self.handler.result(job)
        except Exception as err:
            log.error("job %s could not be run: %s", job_id, err, exc_info=err)
            return error_result(err)

    def _encode(self, job_id: str, result: Result) -> str:
        try:
            return json.dumps(result, ensure_ascii=False, default=json_default)
        except (TypeError, ValueError) as err:
            problem = TypeError(
                f"the output of {self.handler.name} is not JSON-serialisable: {err}"
            )
            log.error("job %s: %s", job_id, problem)
            return json.dumps(error_result(problem), ensure_ascii=False)

    async def _send_chunk(self, job_id: str, chunk: Result) -> None:
        try:
            body = json.dumps(chunk, ensure_ascii=False, default=json_default)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"a chunk yielded by {self.handler.name} is not JSON-serialisable: {err}"
            ) from None
        await self._post(self.protocol.stream_url(job_id), body, job_id, "stream chunk")

    async def _post(self, url: str, body: str, job_id: str, what: str) -> bool:
        """POST ``body`` until the server acknowledges it; False if it is lost."""
        assert self._session is not None
        headers = {**RESULT_HEADERS, "X-Request-ID": job_id}
        timeout = aiohttp.ClientTimeout(total=POST_TIMEOUT)
        clock = self._clock or asyncio.get_running_loop().time
        deadline = clock() + DELIVERY_DEADLINE
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self._session.post(
                    url, data=body, headers=headers, timeout=timeout
                ) as response:
                    await response.read()
                status = response.status
                if status < 300:
                    if attempt > 1:
                        log.info("job %s: %s delivered at attempt %d", job_id, what, attempt)
                    return True
                if status < 500 and status not in (408, 429):
                    log.error(
                        "job %s: the server refused its %s (HTTP %d %s); not retrying",
                        job_id,
                        what,
                        status,
                        response.reason,
                    )
                    return False
                problem = f"HTTP {status} {response.reason}"
            except (aiohttp.ClientError, TimeoutError) as err:
                problem = _describe(err)
            delay = backoff(attempt)
            if clock() + delay > deadline:
                log.critical(
                    "job %s: its %s is LOST: %d attempts over %.0fs all failed (last: %s)",
                    job_id,
                    what,
                    attempt,
                    DELIVERY_DEADLINE,
                    problem,
                )
                return False
            log.warning(
                "job %s: posting its %s failed (%s); retrying in %.1fs",
                job_id,
                what,
                problem,
                delay,
            )
            await self._sleep(delay)

    # -- stopping jobs ----------------------------------------------------------------------

    async def _stop_loop(self) -> None:
        url = self.protocol.stop_url
        if url is None:
            log.warning(
                "RUNPOD_WEBHOOK_GET_JOB has no '/job-take/' segment, so there is no job-stop "
                "channel: jobs cannot be stopped on this worker"
            )
            return
        pacer = Pacer()
        clock = self._clock or asyncio.get_running_loop().time
        while True:
            started = clock()
            try:
                job_ids = await self._stop_signals(url)
            except TooManyRequests:
                delay = pacer.failed(TOO_MANY_REQUESTS_FLOOR)
            except (aiohttp.ClientError, TimeoutError, ProtocolError, ValueError) as err:
                delay = pacer.failed()
                log.warning("job-stop poll failed (%s); next poll in %.1fs", _describe(err), delay)
            else:
                for job_id in job_ids:
                    self._stop_job(job_id)
                delay = pacer.answered(bool(job_ids), clock() - started)
            if delay:
                await self._sleep(delay)

    async def _stop_signals(self, url: str) -> list[str]:
        assert self._session is not None
        timeout = aiohttp.ClientTimeout(total=POLL_TIMEOUT)
        async with self._session.get(url, timeout=timeout) as response:
            if response.status == 204:
                return []
            if response.status == 429:
                raise TooManyRequests()
            response.raise_for_status()
            if response.content_type != "application/json":
                raise ProtocolError(f"job-stop answered {response.content_type}, not JSON")
            payload = json.loads(await response.read() or b"{}")
        ids = payload.get("jobsToStop", []) if isinstance(payload, dict) else None
        if not isinstance(ids, list):
            raise ProtocolError("job-stop answered something other than {'jobsToStop': [...]}")
        return [job_id for job_id in ids if isinstance(job_id, str)]

    def _stop_job(self, job_id: str) -> None:
        task = self._jobs.get(job_id)
        if task is None:
            # Possibly a job whose job-take answer is still on its way: remember it a while.
            now = (self._clock or asyncio.get_running_loop().time)()
            self._early_stops = {
                k: t for k, t in self._early_stops.items() if now - t < EARLY_STOP_MEMORY
            }
            self._early_stops[job_id] = now
            log.debug("job-stop for job %s, which is not running here", job_id)
            return
        if job_id in self._stopped:
            return
        self._stopped.add(job_id)
        log.info(
            "stopping job %s (a plain function already running in a thread cannot be "
            "interrupted: it runs to its end and its result is discarded)",
            job_id,
        )
        task.cancel()

    # -- heartbeat --------------------------------------------------------------------------

    async def _ping_loop(self) -> None:
        url = self.protocol.ping
        if url is None:
            log.info("no heartbeat: RUNPOD_WEBHOOK_PING, RUNPOD_AI_API_KEY or RUNPOD_POD_ID unset")
            return
        assert self._session is not None
        interval = self.protocol.ping_interval
        timeout = aiohttp.ClientTimeout(total=max(2 * interval, 5.0))
        while True:
            params = {"runpod_version": runpod_version()}
            if job_ids := self.in_progress:
                params = {"job_id": ",".join(job_ids), **params}
            try:
                async with self._session.get(url, params=params, timeout=timeout) as response:
                    await response.read()
                if response.status >= 300:
                    log.warning("ping answered HTTP %d %s", response.status, response.reason)
            except (aiohttp.ClientError, TimeoutError) as err:
                log.warning("ping failed: %s", _describe(err))
            await self._sleep(interval)


def _describe(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__
