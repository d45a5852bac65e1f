"""Our job loop in-process (on its own thread) against the loopback job server.

The server checks every request against the worker protocol; each test ends by asserting it
saw no violation. End-to-end runs through the real bootstrap, under both loops, are in
``test_queue_worker.py``.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from flash_runtime.errors import FlashError
from flash_runtime.testing.jobserver import JobServer, load_queue_resource, pinged_ids
from flash_runtime.worker.config import WorkerConfig
from flash_runtime.worker.handler import Handler
from flash_runtime.worker.job_loop import EMPTY_CAP, EMPTY_FLOOR, JobLoop, JobURLs, Pacer, backoff
from flash_runtime.worker.queue import serve

# -- the functions under test -----------------------------------------------------------------


async def greet(name: str, delay: float = 0.0) -> dict[str, str]:
    await asyncio.sleep(delay)
    return {"greeting": f"hello {name}"}


def nap(seconds: float = 0.0) -> dict[str, float]:
    started = time.time()
    time.sleep(seconds)
    return {"started": started, "finished": time.time()}


def count(n: int) -> Iterator[int]:
    yield from range(n)


def unserialisable() -> object:
    return object()


# -- harness ----------------------------------------------------------------------------------


class Running:
    """A JobLoop serving on its own thread and event loop."""

    def __init__(self, job_loop: JobLoop) -> None:
        self.job_loop = job_loop
        self.code: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        self._started.wait(5)

    def _main(self) -> None:
        async def serve() -> int:
            self._loop = asyncio.get_running_loop()
            self._started.set()
            return await self.job_loop.run()

        self.code = asyncio.run(serve())

    def stop(self, *, force: bool = False, timeout: float = 15) -> int | None:
        if self._thread.is_alive():
            assert self._loop is not None
            self._loop.call_soon_threadsafe(functools.partial(self.job_loop.stop, force=force))
            self._thread.join(timeout)
        assert not self._thread.is_alive(), "the job loop did not stop"
        return self.code


@contextmanager
def serving(
    server: JobServer, name: str, *, max_concurrency: int = 1, worker_id: str = "worker-1"
) -> Iterator[Running]:
    loaded = load_queue_resource(__name__, name, max_concurrency=max_concurrency)
    config = WorkerConfig.from_env(server.worker_env(worker_id))
    running = Running(JobLoop(JobURLs.from_config(config), Handler(loaded)))
    try:
        yield running
    finally:
        running.stop(force=True)


@pytest.fixture
def server() -> Iterator[JobServer]:
    with JobServer(hold=1.0) as job_server:
        yield job_server
    assert job_server.violations == []


# -- the protocol -----------------------------------------------------------------------------


def test_job_take_and_job_done_speak_the_protocol(server: JobServer) -> None:
    with serving(server, "greet"):
        job_id = server.submit({"name": "ada"})
        job = server.wait(job_id)
    assert job.result == {"output": {"greeting": "hello ada"}}
    assert job.is_stream is False
    take = server.recorded("job-take")[0]
    assert take.path == "/v2/ep-test/job-take/worker-1"
    assert take.raw_query == "gpu=TEST_GPU&job_in_progress=0"
    assert take.headers["Authorization"] == server.api_key
    assert take.headers["Content-Type"] == "application/json"
    assert take.headers["User-Agent"].startswith("RunPod-Python-SDK/1.12.0 (")
    done = server.recorded("job-done")[0]
    assert done.path == f"/v2/ep-test/job-done/worker-1/{job_id}"
    assert done.raw_query == "gpu=TEST_GPU&isStream=false"
    assert done.headers["X-Request-ID"] == job_id
    assert done.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert done.headers["charset"] == "utf-8"
    assert done.body == '{"output": {"greeting": "hello ada"}}'  # json.dumps, as the SDK


def test_free_slots_take_a_batch(server: JobServer) -> None:
    ids = [server.submit({"seconds": 0.2}) for _ in range(3)]
    with serving(server, "nap", max_concurrency=3):
        jobs = [server.wait(job_id) for job_id in ids]
    first = server.recorded("job-take-batch")[0]
    assert first.path == "/v2/ep-test/job-take-batch/worker-1"
    assert first.raw_query == "gpu=TEST_GPU&batch_size=3&job_in_progress=0"
    assert all(job.result and "finished" in job.result["output"] for job in jobs)
    # All three ran at once: each started before any of the others finished.
    outputs = [job.result["output"] for job in jobs if job.result]
    assert max(o["started"] for o in outputs) < min(o["finished"] for o in outputs)


def test_no_job_take_while_all_slots_are_busy(server: JobServer) -> None:
    with serving(server, "nap"):
        job_id = server.submit({"seconds": 1.0})
        server.wait_running(job_id)
        takes_while_busy = len(server.recorded("job-take"))
        server.wait(job_id)
        # The next poll starts once the function returns, beside the post of its result: the
        # job is still in progress here (its result on its way) when it is sent.
        server.wait_until(lambda: len(server.recorded("job-take")) > takes_while_busy)
        takes_after = server.recorded("job-take")
    assert len(takes_after) == takes_while_busy + 1
    assert takes_after[-1].param("job_in_progress") == "1"


def test_the_next_take_does_not_wait_for_the_results_acknowledgement() -> None:
    # Over a network (0.2 s each way) a job costs one round trip: the next job-take leaves with
    # the result's post, so the next job is handed out as the result arrives, not a round trip
    # later.
    with JobServer(hold=1.0, delay=0.2) as slow:
        ids = [slow.submit({"seconds": 0.0}) for _ in range(3)]
        with serving(slow, "nap"):
            jobs = [slow.wait(job_id, timeout=20) for job_id in ids]
        assert not slow.violations
    for earlier, later in itertools.pairwise(jobs):
        assert earlier.done_at is not None and later.taken_at is not None
        assert later.taken_at - earlier.done_at < 0.2, (earlier, later)


def test_results_waiting_for_delivery_are_bounded(server: JobServer) -> None:
    # While results cannot be delivered, at most `slots` of them wait besides the running
    # jobs: with one slot, two jobs are taken (one delivering, one done and delivering too),
    # then no more until a delivery succeeds.
    server.fail_done_posts(4)
    ids = [server.submit({"seconds": 0.0}) for _ in range(4)]
    with serving(server, "nap"):
        server.wait_until(lambda: len([j for j in server.jobs.values() if j.taken_at]) >= 2)
        time.sleep(0.2)  # the first retries are 0.25 s away at the earliest
        taken = [j.id for j in server.jobs.values() if j.taken_at]
        assert len(taken) == 2, taken
        done = [server.wait(job_id, timeout=30) for job_id in ids]
    assert all(job.result and "finished" in job.result["output"] for job in done)


def test_generator_chunks_are_streamed(server: JobServer) -> None:
    with serving(server, "count"):
        job = server.wait(server.submit({"n": 3}))
    assert job.chunks == [0, 1, 2]
    assert job.result == {"output": [0, 1, 2]}
    assert job.is_stream is True
    streams = server.recorded("job-stream")
    assert [s.raw_query for s in streams] == ["gpu=TEST_GPU&isStream=false"] * 3
    assert streams[0].body == '{"output": 0}'


def test_a_result_whose_post_fails_is_retried(server: JobServer) -> None:
    server.fail_done_posts(2, status=503)
    with serving(server, "greet"):
        job = server.wait(server.submit({"name": "bo"}))
    assert job.result == {"output": {"greeting": "hello bo"}}
    assert job.done_posts == 3


def test_an_unserialisable_output_is_an_error_result(server: JobServer) -> None:
    with serving(server, "unserialisable"):
        job = server.wait(server.submit({}))
    assert job.result is not None
    assert "is not JSON-serialisable" in job.result["error"]


def test_ping_reports_jobs_in_progress(server: JobServer) -> None:
    with serving(server, "greet"):
        job_id = server.submit({"name": "x", "delay": 1.0})
        server.wait(job_id)
    pings = server.recorded("ping")
    assert pings[0].raw_query.startswith("gpu=TEST_GPU&")
    assert all(p.param("runpod_version") == "1.12.0" for p in pings)
    reported = list(pinged_ids(server))
    assert {job_id} in reported
    assert set() in reported  # idle pings carry no job_id


# -- stopping ---------------------------------------------------------------------------------


def test_job_stop_cancels_an_async_job(server: JobServer) -> None:
    with serving(server, "greet"):
        slow = server.submit({"name": "slow", "delay": 60})
        server.wait_reported(slow)
        server.stop_job(slow)
        assert server.wait(slow).state == "stopped"
        # The slot is free again: the next job runs on this one-slot worker.
        quick = server.wait(server.submit({"name": "quick"}))
    assert quick.result == {"output": {"greeting": "hello quick"}}
    assert server.jobs[slow].done_posts == 0


def test_job_stop_of_a_sync_job_discards_its_result(server: JobServer) -> None:
    with serving(server, "nap"):
        busy = server.submit({"seconds": 1.0})
        server.wait_reported(busy)
        server.stop_job(busy)
        assert server.wait(busy).state == "stopped"
        stopped_at = time.time()
        # Two pings later the worker has surely processed the stop; its thread still runs.
        server.wait_until(
            lambda: len([p for p in server.requests if p.kind == "ping" and p.at > stopped_at]) >= 2
        )
        later = [p for p in server.recorded("ping") if p.at > stopped_at][1:]
        after = server.wait(server.submit({"seconds": 0}))
    assert after.result is not None and "finished" in after.result["output"]
    assert server.jobs[busy].done_posts == 0
    assert later and all(busy not in (p.param("job_id") or "") for p in later)


def test_stop_finishes_in_flight_jobs_and_delivers_their_results(server: JobServer) -> None:
    with serving(server, "nap") as running:
        job_id = server.submit({"seconds": 0.5})
        server.wait_reported(job_id)
        assert running.stop() == 0
    assert server.jobs[job_id].state == "done"


def test_forced_stop_cancels_in_flight_jobs(server: JobServer) -> None:
    with serving(server, "greet") as running:
        job_id = server.submit({"name": "x", "delay": 60})
        server.wait_reported(job_id)
        assert running.stop(force=True) == 1
    assert server.jobs[job_id].done_posts == 0


# -- pacing -----------------------------------------------------------------------------------


def test_an_instant_204_server_causes_no_hot_loop() -> None:
    with JobServer(hold=0) as server, serving(server, "greet"):
        time.sleep(1.0)
        takes = len(server.recorded("job-take"))
    assert takes < 40  # a hot loop makes thousands


def test_an_unreachable_server_is_polled_with_backoff() -> None:
    with JobServer() as server:
        env = server.worker_env()
    # The server is gone: every request is refused.
    loaded = load_queue_resource(__name__, "greet")
    job_loop = JobLoop(JobURLs.from_config(WorkerConfig.from_env(env)), Handler(loaded))
    attempts: list[int] = []
    original = job_loop._take

    async def counting_take(count: int) -> list[Any]:
        attempts.append(count)
        return await original(count)

    job_loop._take = counting_take  # type: ignore[method-assign]
    running = Running(job_loop)
    time.sleep(1.5)
    assert running.stop() == 0
    assert 1 <= len(attempts) <= 5


def test_pacer() -> None:
    pacer = Pacer()
    assert pacer.answered(True, 0.0) == 0
    assert pacer.answered(False, 5.0) == 0  # held by the server: poll again at once
    pauses = [pacer.answered(False, 0.0) for _ in range(8)]
    assert pauses == sorted(pauses) and pauses[0] > 0 and pauses[-1] == EMPTY_CAP
    assert pacer.answered(True, 0.0) == 0 and pacer.answered(False, 0.0) == pauses[0]
    assert pacer.failed(5.0) >= 5.0
    assert all(0 < backoff(n) <= 30 for n in range(1, 40))


# -- configuration ----------------------------------------------------------------------------


def test_a_worker_without_heartbeat_still_serves(server: JobServer) -> None:
    env = server.worker_env()
    del env["RUNPOD_WEBHOOK_PING"]
    protocol = JobURLs.from_config(WorkerConfig.from_env(env))
    assert protocol.ping is None
    loaded = load_queue_resource(__name__, "greet")
    running = Running(JobLoop(protocol, Handler(loaded)))
    try:
        assert server.wait(server.submit({"name": "x"})).result == {
            "output": {"greeting": "hello x"}
        }
    finally:
        assert running.stop() == 0
    assert server.recorded("ping") == []


def test_protocol_fills_in_the_placeholders_as_the_official_worker() -> None:
    env = {
        "RUNPOD_WEBHOOK_GET_JOB": "https://api.example/v2/ep/job-take/$ID?gpu=A",
        "RUNPOD_WEBHOOK_POST_OUTPUT": "https://api.example/v2/ep/job-done/$RUNPOD_POD_ID/$ID?gpu=A",
        "RUNPOD_WEBHOOK_POST_STREAM": "https://api.example/v2/ep/job-stream/$RUNPOD_POD_ID/$ID?gpu=A",
        "RUNPOD_WEBHOOK_PING": "https://api.example/v2/ep/ping/$RUNPOD_POD_ID?gpu=A",
        "RUNPOD_AI_API_KEY": "key",
        "RUNPOD_POD_ID": "pod",
        "RUNPOD_PING_INTERVAL": "2500",
    }
    protocol = JobURLs.from_config(WorkerConfig.from_env(env))
    base = "https://api.example/v2/ep"
    assert protocol.take_url(1, False) == f"{base}/job-take/pod?gpu=A&job_in_progress=0"
    assert protocol.take_url(4, True) == (
        f"{base}/job-take-batch/pod?gpu=A&batch_size=4&job_in_progress=1"
    )
    assert protocol.stop_url == f"{base}/job-stop/pod?gpu=A"
    assert protocol.done_url("j1", True) == f"{base}/job-done/pod/j1?gpu=A&isStream=true"
    assert protocol.stream_url("j1") == f"{base}/job-stream/pod/j1?gpu=A&isStream=false"
    assert protocol.ping == f"{base}/ping/pod?gpu=A"
    assert protocol.ping_interval == 2.5
    assert protocol.headers["Authorization"] == "key"  # the raw key, no "Bearer"


def test_a_worker_without_job_urls_is_refused() -> None:
    with pytest.raises(FlashError, match="RUNPOD_WEBHOOK_GET_JOB"):
        JobURLs.from_config(WorkerConfig.from_env({}))


def test_an_unknown_loop_is_refused() -> None:
    loaded = load_queue_resource(__name__, "greet")
    with pytest.raises(FlashError, match="FLASH_QUEUE_LOOP='nope' must be 'flash'"):
        serve(WorkerConfig(queue_loop="nope"), loaded)


def test_our_loop_does_not_import_runpod() -> None:
    code = (
        "import sys, flash_runtime.worker.queue, flash_runtime.worker.job_loop;"
        "sys.exit('runpod' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_the_official_loop_without_runpod_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Our images do not hold runpod (it would double them): FLASH_QUEUE_LOOP=runpod says so."""
    loaded = load_queue_resource(__name__, "greet")
    monkeypatch.setenv("RUNPOD_LOG_LEVEL", "INFO")  # the loop sets it when unset
    monkeypatch.setitem(sys.modules, "runpod", None)  # import runpod -> ImportError
    monkeypatch.setitem(sys.modules, "runpod.serverless", None)
    config = WorkerConfig(queue_loop="runpod", webhook_get_job="http://127.0.0.1:9/job-take/$ID")
    with pytest.raises(FlashError, match=r"needs the runpod package.*flash-runtime\[runpod\]"):
        serve(config, loaded)


def test_the_loops_pacing_runs_on_the_injected_clock_and_sleep() -> None:
    """With a job server that answers every poll at once and empty, each of the loop's polls
    (job-take and job-stop) pauses EMPTY_FLOOR, then twice that, up to EMPTY_CAP: on a clock
    that stands still (every answer is instant) and a sleep that does not wait, so the test
    spends no pacing time of its own."""
    delays: list[float] = []

    async def main() -> None:
        with JobServer(hold=0.0) as jobs:  # held for no time: every job-take answers 204 at once
            env = jobs.worker_env("pacer", ping_ms=3_600_000)
            loaded = load_queue_resource(__name__, "greet")
            loop: JobLoop

            async def fake_sleep(seconds: float) -> None:
                if seconds < 3000:  # the heartbeat's hour is not pacing
                    delays.append(seconds)
                    if len(delays) >= 16:
                        loop.stop()
                await asyncio.sleep(0)

            loop = JobLoop(
                JobURLs.from_config(WorkerConfig.from_env(env)),
                Handler(loaded),
                clock=lambda: 0.0,
                sleep=fake_sleep,
            )
            async with asyncio.timeout(30):
                await loop.run()

    asyncio.run(main())
    steps = [min(EMPTY_CAP, EMPTY_FLOOR * 2**i) for i in range(6)]  # 0.05 ... 1.0
    assert set(delays) <= set(steps)
    assert delays.count(EMPTY_FLOOR) == 2  # each poll starts at the floor once, never again
    assert delays.count(EMPTY_CAP) >= 2  # and both reach the cap
