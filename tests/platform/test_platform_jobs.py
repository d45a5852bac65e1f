"""The job store on its own: leases, results, cancellation, timeouts, recovery, retention."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import orjson

from flash_runtime.platform import db
from flash_runtime.platform.jobs import Job, JobStore
from flash_runtime.platform.settings import RuntimeSettings
from flash_runtime.protocol.wire import JobStatus
from flash_runtime.testing.net import wait_until_async

EP = "ep1"


class Events:
    def __init__(self) -> None:
        self.stopped: list[tuple[str, str]] = []
        self.finished: list[str] = []

    def job_stopped(self, worker_id: str, job_id: str) -> None:
        self.stopped.append((worker_id, job_id))

    def job_finished(self, job: Job) -> None:
        self.finished.append(job.id)


def store_at(path: Path, **settings: Any) -> tuple[JobStore, Events]:
    events = Events()
    return JobStore(db.connect(path), RuntimeSettings(**settings), events), events


def run(test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(test())


def always() -> bool:
    return True


def test_take_hands_over_a_job_submitted_while_the_poll_waits(tmp_path: Path) -> None:
    store, _ = store_at(tmp_path / "db")

    async def test() -> None:
        poll = asyncio.create_task(store.take(EP, "w1", 1, 5.0, always))
        await wait_until_async(lambda: store.queue(EP).takers, what="the poll to be held")
        assert not poll.done()  # held, not answered empty
        job = store.submit(EP, {"x": 1})
        taken = await asyncio.wait_for(poll, 1)
        assert [j.id for j in taken] == [job.id]
        assert job.status is JobStatus.IN_PROGRESS
        assert job.worker_id == "w1"
        assert store.leased("w1") == {job.id}

    run(test)


def test_an_empty_poll_returns_after_its_hold(tmp_path: Path) -> None:
    store, _ = store_at(tmp_path / "db")

    async def test() -> None:
        started = time.monotonic()
        assert await store.take(EP, "w1", 1, 0.2, always) == []
        assert time.monotonic() - started >= 0.19

    run(test)


def test_batch_take_and_results(tmp_path: Path) -> None:
    store, events = store_at(tmp_path / "db")

    async def test() -> None:
        jobs = [store.submit(EP, {"n": n}) for n in range(3)]
        taken = await store.take(EP, "w1", 2, 1.0, always)
        assert [j.id for j in taken] == [jobs[0].id, jobs[1].id]
        assert store.finish("w1", jobs[0].id, {"output": {"ok": True}}) is jobs[0]
        assert store.finish("w1", jobs[1].id, {"error": '{"error_message": "boom"}'}) is jobs[1]
        assert jobs[0].status is JobStatus.COMPLETED
        assert jobs[1].status is JobStatus.FAILED
        payload = orjson.loads(orjson.dumps(store.get(jobs[1].id).payload()))  # type: ignore[union-attr]
        assert payload["status"] == "FAILED"
        assert payload["error"] == '{"error_message": "boom"}'
        assert {"delayTime", "executionTime", "workerId"} <= payload.keys()
        assert events.finished == [jobs[0].id, jobs[1].id]
        assert store.counts(EP) == {
            "completed": 1,
            "failed": 1,
            "inProgress": 0,
            "inQueue": 1,
            "retried": 0,
        }

    run(test)


def test_a_released_worker_s_job_goes_back_to_the_front_and_counts_as_retried(
    tmp_path: Path,
) -> None:
    store, _ = store_at(tmp_path / "db")

    async def test() -> None:
        first = store.submit(EP, 1)
        second = store.submit(EP, 2)
        await store.take(EP, "w1", 1, 1.0, always)
        assert [j.id for j in store.release_worker("w1")] == [first.id]
        taken = await store.take(EP, "w2", 1, 1.0, always)
        assert taken == [first]  # ahead of the job that never ran
        store.finish("w2", first.id, {"output": 1})
        assert first.attempts == 2
        assert store.counts(EP)["retried"] == 1
        assert second.status is JobStatus.IN_QUEUE

    run(test)


def test_first_result_wins_and_late_results_are_dropped(tmp_path: Path) -> None:
    store, events = store_at(tmp_path / "db")

    async def test() -> None:
        job = store.submit(EP, None)
        await store.take(EP, "w1", 1, 1.0, always)
        store.release_worker("w1")  # w1 went silent...
        await store.take(EP, "w2", 1, 1.0, always)
        # ...but finishes first: its result is taken and w2 is told to stop.
        assert store.finish("w1", job.id, {"output": "from w1"}) is job
        assert events.stopped == [("w2", job.id)]
        assert store.finish("w2", job.id, {"output": "from w2"}) is None
        assert orjson.loads(job.output or b"") == "from w1"

    run(test)


def test_cancel_running_and_queued_jobs(tmp_path: Path) -> None:
    store, events = store_at(tmp_path / "db")

    async def test() -> None:
        running = store.submit(EP, None)
        queued = store.submit(EP, None)
        await store.take(EP, "w1", 1, 1.0, always)
        store.cancel(running)
        store.cancel(queued)
        assert running.status is JobStatus.CANCELLED
        assert queued.status is JobStatus.CANCELLED
        assert events.stopped == [("w1", running.id)]
        assert store.leased("w1") == frozenset()
        assert store.finish("w1", running.id, {"output": 1}) is None
        assert await store.take(EP, "w1", 1, 0.05, always) == []

    run(test)


def test_execution_timeout(tmp_path: Path) -> None:
    store, events = store_at(tmp_path / "db")

    async def test() -> None:
        job = store.submit(EP, None, execution_timeout_ms=100)
        await store.take(EP, "w1", 1, 1.0, always)
        await store.wait(job, 2.0)
        assert job.status is JobStatus.TIMED_OUT
        assert events.stopped == [("w1", job.id)]
        assert store.finish("w1", job.id, {"output": "late"}) is None
        assert store.get(job.id).status is JobStatus.TIMED_OUT  # type: ignore[union-attr]

    run(test)


def test_reconcile_requeues_only_old_leases_missing_from_the_ping(tmp_path: Path) -> None:
    store, _ = store_at(tmp_path / "db")

    async def test() -> None:
        kept, lost = store.submit(EP, 1), store.submit(EP, 2)
        await store.take(EP, "w1", 2, 1.0, always)
        assert store.reconcile("w1", {kept.id}, grace=5.0) == []  # too recent to judge
        assert store.reconcile("w1", {kept.id}, grace=0.0) == [lost]
        assert lost.status is JobStatus.IN_QUEUE
        assert kept.status is JobStatus.IN_PROGRESS

    run(test)


def test_a_restart_requeues_running_jobs_and_keeps_queued_ones(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store, _ = store_at(path)

    async def before() -> list[Job]:
        jobs = [store.submit(EP, {"n": n}) for n in range(3)]
        await store.take(EP, "w1", 1, 1.0, always)
        store.finish("w1", jobs[0].id, {"output": "done"})
        await store.take(EP, "w1", 1, 1.0, always)
        return jobs

    jobs = asyncio.run(before())
    store.add_chunk(jobs[1].id, {"output": "chunk"})
    store.conn.close()

    again, _ = store_at(path)
    assert again.recover() == 1
    assert again.get(jobs[0].id).status is JobStatus.COMPLETED  # type: ignore[union-attr]

    async def after() -> None:
        taken = await again.take(EP, "w2", 5, 1.0, always)
        assert [j.id for j in taken] == [jobs[1].id, jobs[2].id]
        assert orjson.loads(taken[0].input) == {"n": 1}
        # the chunk streamed before the restart is still there, and a new one is added after it
        again.add_chunk(jobs[1].id, {"output": "more"})
        _, chunks = await again.read_stream(taken[0], 0)
        assert [orjson.loads(c) for c in chunks] == ["chunk", "more"]

    asyncio.run(after())


def test_retention_and_queue_ttl(tmp_path: Path) -> None:
    store, _ = store_at(tmp_path / "db", result_ttl_s=0.0, sync_result_ttl_s=0.0)

    async def test() -> None:
        done = store.submit(EP, None)
        expired = store.submit(EP, None, ttl_ms=0)
        await store.take(EP, "w1", 1, 1.0, always)
        store.finish("w1", done.id, {"output": 1})
        await asyncio.sleep(0.01)
        assert store.expire() == 2
        assert store.get(done.id) is None
        assert store.get(expired.id) is None

    run(test)


def test_stream_chunks_are_read_once(tmp_path: Path) -> None:
    store, _ = store_at(tmp_path / "db")

    async def test() -> None:
        job = store.submit(EP, None)
        await store.take(EP, "w1", 1, 1.0, always)
        reader = asyncio.create_task(store.read_stream(job, 2.0))
        await wait_until_async(lambda: job.changed is not None, what="the reader to wait")
        store.add_chunk(job.id, {"output": {"i": 0}})
        status, chunks = await asyncio.wait_for(reader, 1)
        assert status is JobStatus.IN_PROGRESS
        assert [orjson.loads(c) for c in chunks] == [{"i": 0}]
        store.add_chunk(job.id, {"output": {"i": 1}})
        store.finish("w1", job.id, {"output": [{"i": 0}, {"i": 1}]})
        status, chunks = await store.read_stream(job, 0)
        assert status is JobStatus.COMPLETED
        assert [orjson.loads(c) for c in chunks] == [{"i": 1}]

    run(test)
