"""Queue workers end to end: fixture apps built into real artifacts, run by the real bootstrap,
polling the loopback job server, under our job loop and under the official ``runpod`` loop.

Both loops must give the same results. The official loop runs exactly as
``runpod.serverless.start`` runs in production, except that the SDK's own switches turn off its
fitness checks (they need outbound network and 4 GB of free memory).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import build_app

from flash_runtime.testing.jobserver import JobServer
from flash_runtime.testing.workers import WorkerProcess, start_worker

LOOPS = ["flash", "runpod"]
OFFICIAL_LOOP_KNOBS = {"RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true", "RUNPOD_SKIP_GPU_CHECK": "true"}


@dataclass
class QueueWorker:
    """A bootstrap process and the job server it polls."""

    server: JobServer
    process: WorkerProcess
    pod_id: str

    def run(self, job_input: Any, timeout: float = 30) -> dict[str, Any]:
        """Submit a job and return its result."""
        return self.wait(self.server.submit(job_input), timeout).result or {}

    def wait(self, job_id: str, timeout: float = 30) -> Any:
        try:
            return self.server.wait(job_id, timeout)
        except TimeoutError:
            pytest.fail(f"job {job_id} got no result; worker log:\n{self.process.log()}")


StartQueueWorker = Callable[..., QueueWorker]


class Fleet:
    """Starts queue workers (one job server each) and stops them all at the end."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self.tmp = tmp
        self.artifacts: dict[str, Path] = {}
        self.started: list[QueueWorker] = []

    def start(self, app: str, loop: str, resource: str | None = None) -> QueueWorker:
        if app not in self.artifacts:
            self.artifacts[app] = build_app(app, self.tmp.mktemp(app))
        server = JobServer(hold=1.0).__enter__()
        pod_id = f"{app}-{loop}-{len(self.started)}"
        env = {**server.worker_env(pod_id, ping_ms=1000), "FLASH_QUEUE_LOOP": loop}
        if loop == "runpod":
            env.update(OFFICIAL_LOOP_KNOBS)
        process = start_worker(self.artifacts[app], self.tmp.mktemp("app"), resource, extra_env=env)
        worker = QueueWorker(server, process, pod_id)
        self.started.append(worker)
        return worker

    def close(self) -> None:
        for worker in self.started:  # all at once: the official loop takes a while to stop
            if worker.process.proc.poll() is None:
                worker.process.proc.send_signal(signal.SIGTERM)
        for worker in self.started:
            worker.process.stop(timeout=15)
            worker.server.close()
        violations = {w.pod_id: w.server.violations for w in self.started if w.server.violations}
        assert not violations, f"protocol violations: {violations}"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLASH_HOME", str(tmp_path_factory.getbasetemp() / "flash_home"))
        mp.delenv("FLASH_RESOURCE_NAME", raising=False)
        fleet = Fleet(tmp_path_factory)
        try:
            yield fleet
        finally:
            fleet.close()


@pytest.fixture(scope="module")
def qb(fleet: Fleet) -> Iterator[StartQueueWorker]:
    """``qb(app, loop)``: the module's shared worker of ``tests/apps/<app>`` under ``loop``."""
    shared: dict[tuple[str, str], QueueWorker] = {}

    def get(app: str, loop: str) -> QueueWorker:
        if (app, loop) not in shared:
            shared[app, loop] = fleet.start(app, loop)
        return shared[app, loop]

    yield get


def error_info(result: dict[str, Any]) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(result["error"])
    return info


# -- results ----------------------------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_results(qb: StartQueueWorker, loop: str) -> None:
    greet, echo, text = qb("qb_async", loop), qb("qb_sync", loop), qb("qb_class", loop)
    assert greet.run({"name": "ada"}) == {"output": {"greeting": "hello ada"}}
    assert greet.run({"name": "bo", "__empty": True}) == {"output": {"greeting": "hello bo"}}
    assert echo.run({"value": [1, "two"], "times": 2}) == {"output": [[1, "two"], [1, "two"]]}
    assert echo.run({"value": "héllo ✓"}) == {"output": "héllo ✓"}
    assert echo.run({"value": {"a": 1, "error": "soft"}}) == {"output": {"a": 1}, "error": "soft"}
    assert echo.run({"value": {"a": 1, "refresh_worker": True}}) == {
        "output": {"a": 1},
        "stopPod": True,
    }
    assert echo.run({"value": {}}) == {}
    assert echo.run({}) == {"output": None}
    first = text.run({"method": "upper", "text": "Flash"})
    second = text.run({"method": "lower", "text": "Flash"})
    assert first == {"output": {"text": "FLASH", "calls": 1, "instances": 1}}
    assert second == {"output": {"text": "flash", "calls": 2, "instances": 1}}


@pytest.mark.parametrize("loop", LOOPS)
def test_error_payloads(qb: StartQueueWorker, loop: str) -> None:
    crash, echo, text = qb("qb_crash", loop), qb("qb_sync", loop), qb("qb_class", loop)
    info = error_info(crash.run({"message": "kaput"}))
    assert info["error_type"] == "<class 'RuntimeError'>"
    assert info["error_message"] == "kaput"
    assert "raise RuntimeError(message)" in info["error_traceback"]
    assert info["worker_id"] == crash.pod_id
    assert info["hostname"] == "unknown"
    assert info["runpod_version"] == "1.12.0"
    invalid = "<class 'flash_runtime.worker.arguments.InvalidArguments'>"
    wrong_type = error_info(echo.run({"times": "twice"}))
    assert (wrong_type["error_type"], "`$.times`" in wrong_type["error_message"]) == (invalid, True)
    assert wrong_type["error_traceback"] == ""  # the caller's input was wrong: no internals
    not_object = error_info(echo.run([1, 2]))
    assert "job input must be a JSON object" in not_object["error_message"]
    unknown = error_info(text.run({"method": "title", "text": "x"}))
    assert "no public method 'title'; it has: lower, upper" in unknown["error_message"]
    # The worker keeps serving after errors.
    assert crash.run({"message": "again"})["error"]
    assert echo.run({"value": 1}) == {"output": 1}


@pytest.mark.parametrize("loop", LOOPS)
def test_pydantic_model_inputs_and_outputs(fleet: Fleet, loop: str) -> None:
    """A lone model parameter takes the whole input (or {"item": {...}}), arrives as an
    instance, is checked by pydantic (the field named, no traceback); models come back as
    JSON."""
    worker = fleet.start("pydantic_models", loop, "models-quote")
    assert worker.run({"name": "lamp", "price": 10}) == {
        "output": {"item": {"name": "lamp", "price": 10.0, "tags": []}, "total": 12.0}
    }
    assert worker.run({"item": {"name": "x", "price": 1}})["output"]["total"] == 1.2
    error = error_info(worker.run({"name": "lamp", "price": 0}))
    assert "InvalidArguments" in error["error_type"] and "$.item.price" in error["error_message"]
    assert error["error_traceback"] == ""


GENERATORS: dict[str, tuple[dict[str, Any], list[Any]]] = {
    "qb_gen_sync": ({"n": 3}, [0, 1, 2]),
    "qb_gen_async": ({"word": "abc"}, [{"index": i, "letter": c} for i, c in enumerate("abc")]),
}


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("app", list(GENERATORS))
def test_generators_stream_their_chunks(qb: StartQueueWorker, loop: str, app: str) -> None:
    worker = qb(app, loop)
    job_input, chunks = GENERATORS[app]
    job = worker.wait(worker.server.submit(job_input))
    assert job.chunks == chunks
    assert job.result == {"output": chunks}
    assert job.is_stream is True
    failed = worker.wait(worker.server.submit({**job_input, "fail_at": 2}))
    assert failed.chunks == chunks[:2]
    assert failed.result["error"].startswith("handler: failed at 2 \ntraceback: Traceback")


# -- concurrency, delivery, stopping ----------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_two_slow_sync_jobs_overlap_with_two_slots(qb: StartQueueWorker, loop: str) -> None:
    worker = qb("qb_slow", loop)
    ids = [worker.server.submit({"seconds": 1.0}) for _ in range(2)]
    first, second = (worker.wait(job_id).result["output"] for job_id in ids)
    assert first["started"] < second["finished"] and second["started"] < first["finished"]


@pytest.mark.parametrize("loop", LOOPS)
def test_a_result_whose_first_post_fails_is_retried(qb: StartQueueWorker, loop: str) -> None:
    worker = qb("qb_async", loop)
    worker.server.fail_done_posts(1, status=500)
    job = worker.wait(worker.server.submit({"name": "retry"}))
    assert job.result == {"output": {"greeting": "hello retry"}}
    assert job.done_posts == 2


def test_job_stop_cancels_an_async_job(qb: StartQueueWorker) -> None:
    worker = qb("qb_async", "flash")
    slow = worker.server.submit({"name": "slow", "delay": 120})
    worker.server.wait_reported(slow)
    worker.server.stop_job(slow)
    assert worker.wait(slow).state == "stopped"
    # One slot: the next job runs only if the stopped one really let go of it.
    assert worker.run({"name": "next"}) == {"output": {"greeting": "hello next"}}
    assert worker.server.jobs[slow].done_posts == 0
    assert "job " + slow + " stopped" in worker.process.log()


@pytest.mark.parametrize("loop", LOOPS)
def test_sigterm_finishes_the_in_flight_job(fleet: Fleet, loop: str) -> None:
    worker = fleet.start("qb_slow", loop)
    job_id = worker.server.submit({"seconds": 1.5})
    worker.server.wait_reported(job_id)
    worker.process.proc.send_signal(signal.SIGTERM)
    assert worker.process.wait_exit(timeout=20) == 0, worker.process.log()
    assert worker.server.jobs[job_id].state == "done"
    assert "finished" in (worker.server.jobs[job_id].result or {}).get("output", {})
