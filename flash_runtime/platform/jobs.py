"""The job queue: every accepted job in SQLite, the live ones also in memory.

A job's life (Runpod's statuses)::

    IN_QUEUE ──take──▶ IN_PROGRESS ──done──▶ COMPLETED | FAILED
       ▲  │                 │  │
       │  └─cancel/purge─▶ CANCELLED ◀─cancel─┘  └─executionTimeout─▶ TIMED_OUT
       └──── lease lost (worker died, stopped pinging, or was cut off) ─┘

Rules, and why:

* A job is written to SQLite before ``/run`` answers, and every transition is written before it
  is announced, so an accepted job survives a platform crash. On start-up every unfinished job
  is queued again (its worker is gone with the old platform): delivery is at-least-once.
* A taken job is leased to its worker until the worker posts a result. The runtime ends the
  lease (``release_worker``) when the worker's process exits or it stops being heard from; the
  job then goes back to the front of the queue and counts as retried.
* The first result wins. A late result (after a cancel, a timeout, or from a worker whose lease
  was ended while it still ran the job) is acknowledged and dropped, except that a job waiting
  in the queue again accepts it: the work is done, running it twice helps nobody.
* Workers long-poll: ``take`` parks the request on a future that ``submit`` resolves, so a job
  reaches an idle worker without any polling delay, and an idle worker costs nothing.
* Finished jobs stay queryable for a while (``RuntimeSettings.result_ttl_s``, 30 min like
  Runpod; 1 min once a ``/runsync`` caller got the result), then they are deleted.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from ..protocol.wire import FINAL_STATUSES, JobStatus
from . import db
from .settings import RuntimeSettings

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL,
    status TEXT NOT NULL,
    input BLOB NOT NULL,              -- JSON text
    output BLOB,                      -- JSON text
    error BLOB,                       -- JSON text
    webhook TEXT,
    execution_timeout_ms INTEGER NOT NULL DEFAULT 0,
    sync INTEGER NOT NULL DEFAULT 0,  -- submitted through /runsync
    created_at REAL NOT NULL,         -- wall-clock seconds
    started_at REAL,
    completed_at REAL,
    worker_id TEXT,                   -- lease owner while IN_PROGRESS, then who finished it
    attempts INTEGER NOT NULL DEFAULT 0,
    expires_at REAL NOT NULL,         -- queued: dropped after; finished: deleted after
    stream_read INTEGER NOT NULL DEFAULT 0,
    request_id TEXT                   -- X-Request-ID of the submit (LOCAL: followed across endpoints)
);
CREATE INDEX IF NOT EXISTS jobs_endpoint_status ON jobs (endpoint_id, status);
CREATE INDEX IF NOT EXISTS jobs_expires ON jobs (expires_at);
CREATE TABLE IF NOT EXISTS job_stream (
    job_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    output BLOB NOT NULL,             -- JSON text of one chunk
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
"""


FINAL = FINAL_STATUSES


@dataclass(eq=False)
class Job:
    """One job. Live jobs are these objects; finished ones are rebuilt from SQLite on demand."""

    id: str
    endpoint_id: str
    input: bytes  # JSON text, handed to the worker verbatim
    created_at: float
    expires_at: float
    execution_timeout_ms: int = 0
    webhook: str | None = None
    sync: bool = False
    status: JobStatus = JobStatus.IN_QUEUE
    output: bytes | None = None  # JSON text
    error: bytes | None = None  # JSON text
    started_at: float | None = None
    completed_at: float | None = None
    worker_id: str | None = None
    attempts: int = 0
    stream_read: int = 0
    # In memory only.
    queued_at: float = 0.0  # monotonic; when it last entered the queue (for the autoscaler)
    stream_seq: int = 0
    delivered: bool = False  # a /runsync caller received the result
    holders: set[str] = field(default_factory=set)  # workers it was handed to (this start)
    request_id: str | None = None  # the submit's X-Request-ID
    changed: asyncio.Event | None = field(default=None, repr=False)
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def payload(self) -> dict[str, Any]:
        """The job as ``/status`` and ``/runsync`` show it (Runpod's field names)."""
        body: dict[str, Any] = {"id": self.id, "status": self.status.value}
        if self.started_at is not None:
            body["delayTime"] = round((self.started_at - self.created_at) * 1000)
            if self.completed_at is not None:
                body["executionTime"] = round((self.completed_at - self.started_at) * 1000)
        if self.output is not None:
            body["output"] = orjson.Fragment(self.output)
        if self.error is not None:
            body["error"] = orjson.Fragment(self.error)
        if self.worker_id is not None:
            body["workerId"] = self.worker_id
        if self.request_id is not None:  # LOCAL: the request it belongs to, across endpoints
            body["requestId"] = self.request_id
        return body

    def notify(self) -> None:
        if self.changed is not None:
            self.changed.set()
            self.changed = None


class JobEvents(Protocol):
    """What the job store tells the runtime."""

    def job_stopped(self, worker_id: str, job_id: str) -> None:
        """A job the worker is running was cancelled or timed out: tell it through job-stop."""

    def job_finished(self, job: Job) -> None:
        """A job reached a final status (deliver its webhook)."""


@dataclass
class EndpointQueue:
    """The queued jobs of one endpoint and the long-polls waiting for them."""

    pending: deque[Job] = field(default_factory=deque)
    takers: deque[asyncio.Future[None]] = field(default_factory=deque)
    running: int = 0

    def wake(self) -> None:
        """Hand the head of the queue to the longest-waiting long-poll."""
        while self.takers:
            taker = self.takers.popleft()
            if not taker.done():
                taker.set_result(None)
                return


class JobStore:
    """Accepts, leases, finishes and forgets jobs; see the module docstring for the rules."""

    def __init__(
        self, conn: sqlite3.Connection, settings: RuntimeSettings, events: JobEvents
    ) -> None:
        self.conn = conn
        self.settings = settings
        self.events = events
        self._live: dict[str, Job] = {}
        self._queues: dict[str, EndpointQueue] = {}
        self._leases: dict[str, set[str]] = {}  # worker id -> ids of the jobs it holds
        self._parked: dict[str, set[asyncio.Future[None]]] = {}  # worker id -> its long-polls
        self.closing = False
        conn.executescript(SCHEMA)
        columns = {row["name"] for row in conn.execute("PRAGMA table_info(jobs)")}
        if "request_id" not in columns:  # a database from before request ids
            conn.execute("ALTER TABLE jobs ADD COLUMN request_id TEXT")

    # -- start-up ---------------------------------------------------------------------------

    def recover(self) -> int:
        """Load unfinished jobs after a (re)start; jobs that were running are queued again.

        Returns how many jobs were put back in the queue.
        """
        rows = self.conn.execute(
            "SELECT * FROM jobs WHERE status IN (?, ?) ORDER BY created_at",
            (JobStatus.IN_QUEUE.value, JobStatus.IN_PROGRESS.value),
        ).fetchall()
        requeued = 0
        now = time.monotonic()
        with _transaction(self.conn):
            for row in rows:
                job = _job_from_row(row)
                if job.status is JobStatus.IN_PROGRESS:
                    job.status = JobStatus.IN_QUEUE
                    job.started_at = None
                    job.worker_id = None
                    self._write(job)
                    requeued += 1
                job.queued_at = now
                job.stream_seq = self.conn.execute(
                    "SELECT coalesce(max(seq), 0) FROM job_stream WHERE job_id = ?", (job.id,)
                ).fetchone()[0]
                self._live[job.id] = job
                self.queue(job.endpoint_id).pending.append(job)
        return requeued

    # -- clients ----------------------------------------------------------------------------

    def queue(self, endpoint_id: str) -> EndpointQueue:
        q = self._queues.get(endpoint_id)
        if q is None:
            q = self._queues[endpoint_id] = EndpointQueue()
        return q

    def submit(
        self,
        endpoint_id: str,
        job_input: Any,
        *,
        webhook: str | None = None,
        execution_timeout_ms: int = 0,
        ttl_ms: int | None = None,
        sync: bool = False,
        request_id: str | None = None,
    ) -> Job:
        """Accept a job: persist it, queue it, wake a waiting worker."""
        now = time.time()
        ttl_s = self.settings.queue_ttl_s if ttl_ms is None else ttl_ms / 1000
        job = Job(
            id=str(uuid.uuid4()),
            endpoint_id=endpoint_id,
            input=orjson.dumps(job_input),
            created_at=now,
            expires_at=now + ttl_s,
            execution_timeout_ms=execution_timeout_ms,
            webhook=webhook,
            sync=sync,
            queued_at=time.monotonic(),
            request_id=request_id,
        )
        self.conn.execute(
            "INSERT INTO jobs (id, endpoint_id, status, input, webhook, execution_timeout_ms,"
            " sync, created_at, expires_at, request_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                job.id,
                endpoint_id,
                job.status.value,
                job.input,
                webhook,
                execution_timeout_ms,
                int(sync),
                now,
                job.expires_at,
                request_id,
            ),
        )
        self._live[job.id] = job
        q = self.queue(endpoint_id)
        q.pending.append(job)
        q.wake()
        return job

    def get(self, job_id: str) -> Job | None:
        """A live job, or a finished one still retained."""
        job = self._live.get(job_id)
        if job is not None:
            return job
        row = self.conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return None if row is None else _job_from_row(row)

    async def wait(self, job: Job, timeout: float) -> Job:
        """Wait up to ``timeout`` s for ``job`` to finish; returns its latest state."""
        deadline = time.monotonic() + timeout
        while not job.final and not self.closing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if job.changed is None:
                job.changed = asyncio.Event()
            try:
                async with asyncio.timeout(remaining):
                    await job.changed.wait()
            except TimeoutError:
                break
        return job

    def cancel(self, job: Job) -> Job:
        """Cancel a job that has not finished; a running one is told to stop."""
        if job.final:
            return job
        if job.status is JobStatus.IN_QUEUE:
            try:
                self.queue(job.endpoint_id).pending.remove(job)
            except ValueError:
                pass
        worker_id = self._unlease(job)
        self._finish(job, JobStatus.CANCELLED, None, None)
        if worker_id is not None:
            self.events.job_stopped(worker_id, job.id)
        return job

    def retry(self, job: Job) -> Job:
        """Queue a FAILED or TIMED_OUT job again, under its id, without its old result (what
        Runpod's ``/retry/{job_id}`` does); ValueError for a job in any other state."""
        if job.status not in (JobStatus.FAILED, JobStatus.TIMED_OUT):
            raise ValueError(
                f"job {job.id} is {job.status.value}: only FAILED or TIMED_OUT jobs can be retried"
            )
        now = time.time()
        job.status = JobStatus.IN_QUEUE
        job.output = job.error = None
        job.started_at = job.completed_at = None
        job.worker_id = None
        job.attempts = 0
        job.delivered = False
        job.sync = False
        job.stream_seq = job.stream_read = 0
        job.expires_at = now + self.settings.queue_ttl_s
        job.queued_at = time.monotonic()
        with _transaction(self.conn):
            self.conn.execute("DELETE FROM job_stream WHERE job_id = ?", (job.id,))
            self.conn.execute("UPDATE jobs SET stream_read = 0 WHERE id = ?", (job.id,))
            self._write(job)
        self._live[job.id] = job
        q = self.queue(job.endpoint_id)
        q.pending.append(job)
        q.wake()
        return job

    def purge(self, endpoint_id: str) -> int:
        """Cancel every queued (not running) job of an endpoint; returns how many."""
        q = self.queue(endpoint_id)
        jobs = list(q.pending)
        q.pending.clear()
        with _transaction(self.conn):
            for job in jobs:
                self._finish(job, JobStatus.CANCELLED, None, None)
        return len(jobs)

    async def read_stream(self, job: Job, wait: float) -> tuple[JobStatus, list[bytes]]:
        """Chunks streamed since the last read (each is returned once), waiting up to
        ``wait`` s for the first one while the job runs."""
        chunks = self._unread_chunks(job)
        if not chunks and not job.final and wait > 0 and not self.closing:
            if job.changed is None:
                job.changed = asyncio.Event()
            try:
                async with asyncio.timeout(wait):
                    await job.changed.wait()
            except TimeoutError:
                pass
            chunks = self._unread_chunks(job)
        return job.status, chunks

    def _unread_chunks(self, job: Job) -> list[bytes]:
        rows = self.conn.execute(
            "SELECT seq, output FROM job_stream WHERE job_id = ? AND seq > ? ORDER BY seq",
            (job.id, job.stream_read),
        ).fetchall()
        if rows:
            job.stream_read = rows[-1][0]
            self.conn.execute(
                "UPDATE jobs SET stream_read = ? WHERE id = ?", (job.stream_read, job.id)
            )
        return [row[1] for row in rows]

    def counts(self, endpoint_id: str) -> dict[str, int]:
        """Runpod's ``health`` job counts for one endpoint (finished ones while retained)."""
        by_status = dict.fromkeys(JobStatus, 0)
        retried = 0
        for status, count, again in self.conn.execute(
            "SELECT status, count(*), sum(attempts > 1) FROM jobs WHERE endpoint_id = ?"
            " GROUP BY status",
            (endpoint_id,),
        ):
            by_status[JobStatus(status)] = count
            retried += again or 0
        return {
            "completed": by_status[JobStatus.COMPLETED],
            "failed": by_status[JobStatus.FAILED] + by_status[JobStatus.TIMED_OUT],
            "inProgress": by_status[JobStatus.IN_PROGRESS],
            "inQueue": by_status[JobStatus.IN_QUEUE],
            "retried": retried,
        }

    def oldest_wait(self, endpoint_id: str) -> float:
        """Seconds the head of the endpoint's queue has waited (0 when empty)."""
        q = self._queues.get(endpoint_id)
        if q is None or not q.pending:
            return 0.0
        return time.monotonic() - min(job.queued_at for job in q.pending)

    # -- workers ----------------------------------------------------------------------------

    async def take(
        self,
        endpoint_id: str,
        worker_id: str,
        limit: int,
        hold: float,
        may_take: Callable[[], bool],
    ) -> list[Job]:
        """Lease up to ``limit`` jobs to a worker, holding the poll up to ``hold`` s for one.

        ``may_take`` is asked before every lease (false once the worker drains or its
        request is gone); ``release_parked`` ends a held poll early.
        """
        q = self.queue(endpoint_id)
        deadline = time.monotonic() + hold
        while True:
            if self.closing or not may_take():
                if q.pending:
                    q.wake()  # this poll may have been woken for a job: pass it on
                return []
            if q.pending:
                return self._lease(q, worker_id, limit)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return []
            taker: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            q.takers.append(taker)
            parked = self._parked.setdefault(worker_id, set())
            parked.add(taker)
            try:
                async with asyncio.timeout(remaining):
                    await taker
            except TimeoutError:
                pass
            except BaseException:
                if taker.done() and not taker.cancelled() and q.pending:
                    q.wake()  # woken for a job, then cancelled: pass the job on
                raise
            finally:
                parked.discard(taker)
                if not parked:
                    self._parked.pop(worker_id, None)
                if not taker.done():
                    taker.cancel()
                    try:
                        q.takers.remove(taker)
                    except ValueError:
                        pass

    def release_parked(self, worker_id: str) -> None:
        """Answer a worker's held long-polls now (it is draining or went away)."""
        for taker in list(self._parked.get(worker_id, ())):
            if not taker.done():
                taker.set_result(None)

    def _lease(self, q: EndpointQueue, worker_id: str, limit: int) -> list[Job]:
        now = time.time()
        taken: list[Job] = []
        leases = self._leases.setdefault(worker_id, set())
        # One job (the common case) is one autocommitted statement; a batch is one transaction.
        with _transaction(self.conn, enabled=limit > 1 and len(q.pending) > 1):
            while q.pending and len(taken) < limit:
                job = q.pending.popleft()
                job.status = JobStatus.IN_PROGRESS
                job.worker_id = worker_id
                job.started_at = now
                job.attempts += 1
                job.holders.add(worker_id)
                self._write(job)
                leases.add(job.id)
                q.running += 1
                if job.execution_timeout_ms > 0:
                    job.timer = asyncio.get_running_loop().call_later(
                        job.execution_timeout_ms / 1000, self._time_out, job
                    )
                taken.append(job)
        return taken

    def leased(self, worker_id: str) -> frozenset[str]:
        """Ids of the jobs a worker holds."""
        return frozenset(self._leases.get(worker_id, ()))

    def lease_count(self, worker_id: str) -> int:
        return len(self._leases.get(worker_id, ()))

    def finish(self, worker_id: str, job_id: str, result: Any) -> Job | None:
        """Record a worker's result (``{"output": ...}`` and/or ``{"error": ...}``).

        Returns the job when the result was taken, ``None`` when it was dropped (unknown or
        finished job).
        """
        job = self._live.get(job_id)
        if job is None or job.final:
            return None
        if not isinstance(result, dict):
            result = {"output": result}
        if job.status is JobStatus.IN_QUEUE:
            # Its lease had been ended, but the work is done: take the result.
            try:
                self.queue(job.endpoint_id).pending.remove(job)
            except ValueError:
                pass
            job.started_at = job.started_at or time.time()
        holder = self._unlease(job)
        if holder is not None and holder != worker_id:
            self.events.job_stopped(holder, job.id)
        job.worker_id = worker_id
        error = result.get("error")
        try:
            output = orjson.dumps(result["output"]) if "output" in result else None
            stored_error = orjson.dumps(error) if error else None
        except orjson.JSONEncodeError as err:
            # Parsed, but it cannot be written back (nested too deeply): the job fails with the
            # reason instead of the worker's job-done failing forever.
            output, error = (
                None,
                {
                    "error_type": "UnstorableResult",
                    "error_message": f"the job's result cannot be stored as JSON: {err}",
                },
            )
            stored_error = orjson.dumps(error)
        status = JobStatus.FAILED if error else JobStatus.COMPLETED
        self._finish(job, status, output, stored_error)
        return job

    def add_chunk(self, job_id: str, chunk: Any) -> bool:
        """Store one streamed chunk of a running job (``{"output": ...}`` as the SDK posts)."""
        job = self._live.get(job_id)
        if job is None or job.final:
            return False
        if isinstance(chunk, dict) and "output" in chunk:
            chunk = chunk["output"]
        encoded = orjson.dumps(chunk)  # JSONEncodeError: the caller answers 400
        job.stream_seq += 1
        self.conn.execute(
            "INSERT OR REPLACE INTO job_stream (job_id, seq, output) VALUES (?, ?, ?)",
            (job.id, job.stream_seq, encoded),
        )
        job.notify()
        return True

    def release_worker(self, worker_id: str, *, died: str | None = None) -> list[Job]:
        """End a worker's leases: its unfinished jobs go back to the front of the queue.

        When the worker died unasked (``died`` says how), a job it was running on its
        ``max_attempts``-th attempt is FAILED instead, with the reason: the jobs behind it run.
        Returns the jobs queued again.
        """
        ids = self._leases.pop(worker_id, set())
        jobs = [j for j in map(self._live.get, ids) if j is not None]
        requeued = []
        with _transaction(self.conn, enabled=len(jobs) > 1):
            for job in jobs:
                spent = job.attempts >= self.settings.max_attempts
                if died and spent and job.status is JobStatus.IN_PROGRESS:
                    self._fail_after_attempts(job, died)
                elif self._requeue(job):
                    requeued.append(job)
        return requeued

    def _fail_after_attempts(self, job: Job, died: str) -> None:
        self._unlease(job)
        error = {
            "error_type": "WorkerDied",
            "error_message": (
                f"the worker running this job {died}, on each of its {job.attempts} attempts; "
                "it is not run again (FLASH_PLATFORM_JOB_MAX_ATTEMPTS)"
            ),
            "attempts": job.attempts,
        }
        self._finish(job, JobStatus.FAILED, None, orjson.dumps(error))

    def reconcile(self, worker_id: str, reported: set[str], grace: float) -> list[Job]:
        """Requeue jobs leased to a worker that its ping says it does not run.

        A job handed to a poll the worker had just abandoned (it was shutting down, or its
        request timed out) never reaches it; its pings then leave it out. Only leases older
        than ``grace`` s count: a ping sent just before the job arrived cannot list it yet.
        """
        leases = self._leases.get(worker_id)
        if not leases:
            return []
        cutoff = time.time() - grace
        missing = [
            job
            for job in map(self._live.get, leases - reported)
            if job is not None and job.started_at is not None and job.started_at < cutoff
        ]
        for job in missing:
            leases.discard(job.id)
            self._requeue(job)
        return missing

    def _requeue(self, job: Job) -> bool:
        if job.status is not JobStatus.IN_PROGRESS:
            return False
        self._stop_timer(job)
        q = self.queue(job.endpoint_id)
        q.running -= 1
        job.status = JobStatus.IN_QUEUE
        job.worker_id = None
        job.started_at = None
        job.queued_at = time.monotonic()
        self._write(job)
        q.pending.appendleft(job)
        q.wake()
        return True

    # -- housekeeping -----------------------------------------------------------------------

    def expire(self) -> int:
        """Drop queued jobs past their TTL and delete finished jobs past retention."""
        now = time.time()
        dropped = 0
        for job in [j for j in self._live.values() if j.status is JobStatus.IN_QUEUE]:
            if job.expires_at < now:
                try:
                    self.queue(job.endpoint_id).pending.remove(job)
                except ValueError:
                    pass
                del self._live[job.id]
                self.conn.execute("DELETE FROM jobs WHERE id = ?", (job.id,))
                job.notify()
                dropped += 1
        with _transaction(self.conn):
            self.conn.execute(
                "DELETE FROM job_stream WHERE job_id IN (SELECT id FROM jobs"
                " WHERE expires_at < ? AND status NOT IN (?, ?))",
                (now, JobStatus.IN_QUEUE.value, JobStatus.IN_PROGRESS.value),
            )
            dropped += self.conn.execute(
                "DELETE FROM jobs WHERE expires_at < ? AND status NOT IN (?, ?)",
                (now, JobStatus.IN_QUEUE.value, JobStatus.IN_PROGRESS.value),
            ).rowcount
        return dropped

    def mark_delivered(self, job: Job) -> None:
        """A /runsync caller got the result: keep it only briefly (Runpod: 1 minute)."""
        if job.final and not job.delivered:
            job.delivered = True
            job.expires_at = (job.completed_at or time.time()) + self.settings.sync_result_ttl_s
            self.conn.execute(
                "UPDATE jobs SET expires_at = ? WHERE id = ?", (job.expires_at, job.id)
            )

    def forget_endpoint(self, endpoint_id: str) -> None:
        """Cancel every unfinished job of a removed endpoint."""
        for job in [j for j in self._live.values() if j.endpoint_id == endpoint_id]:
            self.cancel(job)
        q = self._queues.pop(endpoint_id, None)
        if q is not None:
            for taker in q.takers:
                if not taker.done():
                    taker.set_result(None)

    def shutdown(self) -> None:
        """Answer every held request now (/runsync, /stream, job-take): the platform stops."""
        self.closing = True
        for job in self._live.values():
            job.notify()
        for q in self._queues.values():
            for taker in q.takers:
                if not taker.done():
                    taker.set_result(None)

    def live(self, endpoint_id: str | None = None) -> Iterable[Job]:
        return (j for j in self._live.values() if endpoint_id in (None, j.endpoint_id))

    # -- internals --------------------------------------------------------------------------

    def _time_out(self, job: Job) -> None:
        job.timer = None
        if job.status is not JobStatus.IN_PROGRESS:
            return
        worker_id = self._unlease(job)
        job.worker_id = worker_id
        message = f"job exceeded its execution timeout of {job.execution_timeout_ms} ms"
        self._finish(job, JobStatus.TIMED_OUT, None, orjson.dumps(message))
        if worker_id is not None:
            self.events.job_stopped(worker_id, job.id)

    def _unlease(self, job: Job) -> str | None:
        """Detach a running job from its worker; returns the worker that held it."""
        if job.status is not JobStatus.IN_PROGRESS or job.worker_id is None:
            return None
        self._stop_timer(job)
        holder = job.worker_id
        leases = self._leases.get(holder)
        if leases is not None:
            leases.discard(job.id)
        self.queue(job.endpoint_id).running -= 1
        return holder

    @staticmethod
    def _stop_timer(job: Job) -> None:
        if job.timer is not None:
            job.timer.cancel()
            job.timer = None

    def _finish(
        self, job: Job, status: JobStatus, output: bytes | None, error: bytes | None
    ) -> None:
        now = time.time()
        job.status = status
        job.output = output
        job.error = error
        job.completed_at = now
        # A /runsync caller still waiting gets the result now: keep it only briefly (saves
        # writing the shorter retention separately on the hot path).
        job.delivered = job.sync and job.changed is not None
        ttl = self.settings.sync_result_ttl_s if job.delivered else self.settings.result_ttl_s
        job.expires_at = now + ttl
        self._write(job)
        self._live.pop(job.id, None)
        job.notify()
        self.events.job_finished(job)

    def _write(self, job: Job) -> None:
        self.conn.execute(
            "UPDATE jobs SET status = ?, output = ?, error = ?, started_at = ?, completed_at = ?,"
            " worker_id = ?, attempts = ?, expires_at = ? WHERE id = ?",
            (
                job.status.value,
                job.output,
                job.error,
                job.started_at,
                job.completed_at,
                job.worker_id,
                job.attempts,
                job.expires_at,
                job.id,
            ),
        )


def _job_from_row(row: sqlite3.Row) -> Job:
    return Job(
        id=row["id"],
        endpoint_id=row["endpoint_id"],
        input=row["input"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        execution_timeout_ms=row["execution_timeout_ms"],
        webhook=row["webhook"],
        sync=bool(row["sync"]),
        status=JobStatus(row["status"]),
        output=row["output"],
        error=row["error"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        worker_id=row["worker_id"],
        attempts=row["attempts"],
        stream_read=row["stream_read"],
        request_id=row["request_id"],
    )


@contextmanager
def _transaction(conn: sqlite3.Connection, *, enabled: bool = True) -> Iterator[None]:
    """Group statements into one transaction (the connection autocommits otherwise)."""
    if not enabled:
        yield
        return
    with db.transaction(conn):
        yield
