"""Queue throughput: jobs per second and per-job overhead for no-op functions, one worker.

``bench/apps/qb_noop`` is built by both packers; each of its endpoints (sync or async, 1 or 4
slots) is served by one worker process booted from its own artifact:

* **ours**: ``python -m flash_runtime.bootstrap`` with our job loop;
* **reference**: the handler the reference's ``flash build`` generated
  (``handler_<endpoint>.py``), loaded as its image loads it, on the official
  ``runpod.serverless.start`` loop (``bench/refimage/flashref_qb.py``);
* **ours on the official loop** (full run only): our handler under ``runpod.serverless.start``
  (``FLASH_QUEUE_LOOP=runpod``), which tells the loop's cost from the handler's.

All are fed by the same job server (``tests/jobserver.py``, long-polling like Runpod's job API,
``bench/jobserver_proc.py``) in a process of its own. After a warm-up, a batch of jobs is
queued at once; jobs per second is the steady rate from the results' arrival times at the
server (see :func:`steady_rate`); the per-job overhead is its inverse (the functions do
nothing). The official loop sleeps a second whenever its slots are full, so it gets far fewer
jobs.

The official loop runs with the SDK's own switches ``RUNPOD_SKIP_AUTO_SYSTEM_CHECKS=true`` and
``RUNPOD_SKIP_GPU_CHECK=true`` (its start-up checks need outbound network and a GPU).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from .common import BENCH, PYTHON, Proc, Section, goal, log, ratios, server_env, spawn, summary
from .reference import RefEnv

OFFICIAL_LOOP_KNOBS = {"RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true", "RUNPOD_SKIP_GPU_CHECK": "true"}
CASES = {  # (function kind, slots) -> endpoint of bench/apps/qb_noop
    ("sync", 1): "noop_sync",
    ("async", 1): "noop_async",
    ("sync", 4): "noop_sync_4",
    ("async", 4): "noop_async_4",
}


class JobServerProc:
    """Driver side of ``bench/jobserver_proc.py``."""

    def __init__(self, logs: Path, hold: float = 2.0, delay: float = 0.0) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self._err = open(logs / f"jobserver-{time.monotonic_ns()}.log", "wb")  # noqa: SIM115
        self.popen = subprocess.Popen(
            [PYTHON, str(BENCH / "jobserver_proc.py"), str(hold), str(delay)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._err,
            text=True,
            env=server_env(),
        )
        hello = self._read()
        self.port = int(hello["port"])

    def _read(self) -> dict[str, Any]:
        stdout: IO[str] | None = self.popen.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"the job server exited ({self.popen.poll()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def call(self, **request: Any) -> dict[str, Any]:
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(request) + "\n")
        self.popen.stdin.flush()
        reply = self._read()
        if "error" in reply:
            raise RuntimeError(f"job server: {reply['error']}")
        return reply

    def worker_env(self, worker: str) -> dict[str, str]:
        return {k: str(v) for k, v in self.call(cmd="env", worker=worker).items()}

    def submit(self, job_input: Any, n: int = 1) -> list[str]:
        return list(self.call(cmd="submit", input=job_input, n=n)["ids"])

    def wait(self, ids: list[str], timeout: float) -> dict[str, Any]:
        return self.call(cmd="wait", ids=ids, timeout=timeout)

    def violations(self) -> list[str]:
        return list(self.call(cmd="violations")["violations"])

    def close(self) -> None:
        if self.popen.stdin is not None:
            self.popen.stdin.close()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
        self._err.close()

    def __enter__(self) -> JobServerProc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def our_worker(
    logs: Path,
    artifact: Path,
    app_dir: Path,
    resource: str,
    jobs_env: dict[str, str],
    loop: str = "flash",
) -> Proc:
    env = server_env(
        {
            **jobs_env,
            "FLASH_BUILD_ARTIFACT_PATH": str(artifact),
            "FLASH_APP_DIR": str(app_dir),
            "FLASH_RESOURCE_NAME": resource,
            "FLASH_LOG_LEVEL": "WARNING",
            "FLASH_QUEUE_LOOP": loop,
            "RUNPOD_ENDPOINT_ID": "bench-ours",
        }
    )
    if loop == "runpod":
        env.update(OFFICIAL_LOOP_KNOBS)
    return spawn(f"ours-qb-{loop}", [PYTHON, "-m", "flash_runtime.bootstrap"], env, logs)


def ref_worker(
    logs: Path,
    ref: RefEnv,
    artifact: Path,
    app_dir: Path,
    resource: str,
    jobs_env: dict[str, str],
) -> Proc:
    env = ref.env(
        server_env(
            {
                **jobs_env,
                **OFFICIAL_LOOP_KNOBS,
                "FLASH_BUILD_ARTIFACT_PATH": str(artifact),
                "FLASH_APP_DIR": str(app_dir),
                "FLASH_RESOURCE_NAME": resource,
                "RUNPOD_ENDPOINT_ID": "bench-ref",
            }
        )
    )
    cmd = [ref.python, str(BENCH / "refimage" / "flashref_qb.py")]
    return spawn("ref-qb", cmd, env, logs)


def steady_rate(done_at: list[float], slots: int) -> float:
    """Jobs per second after the first batch: (n - s) / (t_n - t_s), done times sorted.

    A loop that takes ``s`` jobs at once and then sleeps completes them in steps; counting from
    the end of the first step gives its steady rate even for a few jobs, where n / (t_n - t_0)
    would credit it with a whole free batch. For a loop that never pauses both agree.
    """
    times = sorted(done_at)
    if len(times) <= slots:
        # one step only: nothing after the first batch to time
        raise ValueError(f"{len(times)} jobs on {slots} slots: a steady rate needs more jobs")
    s = max(1, slots)
    return (len(times) - s) / (times[-1] - times[s - 1])


def measure(
    logs: Path,
    start_worker: Any,
    jobs: int,
    warmup: int,
    slots: int,
    timeout: float,
    delay: float = 0.0,
) -> dict[str, Any]:
    """One worker, one job server (``delay``: one-way latency between them): warm up, then
    time a batch of ``jobs`` queued at once."""
    with JobServerProc(logs, delay=delay) as server:
        worker: Proc = start_worker(server.worker_env(f"bench-{time.monotonic_ns()}"))
        try:
            if warmup:
                server.wait(server.submit({}, warmup), timeout=120)
                worker.check_alive()
            ids = server.submit({}, jobs)
            done = server.wait(ids, timeout=timeout)
            worker.check_alive()
        except Exception as err:
            raise RuntimeError(f"{worker.name}: {err}\n{worker.log()}") from err
        finally:
            # the official loop takes seconds to stop, and stopping is not measured
            worker.stop(
                timeout=0 if worker.name.startswith("ref") or "runpod" in worker.name else 5
            )
        violations = server.violations()
    if done["failed"] and not worker.name.startswith("ref"):
        raise RuntimeError(f"{worker.name}: {done['failed']} jobs failed: {done['failure']}")
    rate = steady_rate([t for t in done["done_at"].values() if t], slots)
    return {
        "jobs": jobs,
        "seconds": done["last_done"] - done["first_taken"],
        "jobs_per_s": rate,
        "ms_per_job": 1000 / rate,
        "failed": done["failed"],
        "failure": str((done["failure"] or {}).get("error", ""))[:200] if done["failed"] else "",
        "violations": violations[:5],
    }


def run(
    ref: RefEnv,
    work: Path,
    artifacts: dict[str, Path],
    *,
    rounds: int,
    jobs_ours: int,
    jobs_ref: dict[int, int],
    official_loop: bool,
) -> Section:
    section = Section("queue")
    started = time.perf_counter()
    logs = work / "logs"
    counter = iter(range(1_000_000))

    def fresh() -> Path:
        return work / f"qb-app-{next(counter)}"

    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in range(rounds):
        for (kind, slots), resource in CASES.items():
            case = f"{kind}/c{slots}"
            sides: dict[str, tuple[Any, int, int]] = {
                "ours": (
                    lambda env, res=resource: our_worker(
                        logs, artifacts["ours"], fresh(), res, env
                    ),
                    jobs_ours,
                    20,
                ),
                "ref": (
                    lambda env, res=resource: ref_worker(
                        logs, ref, artifacts["ref"], fresh(), res, env
                    ),
                    jobs_ref[slots],
                    0,  # steady_rate leaves out the first batch, start-up included
                ),
            }
            if official_loop and r == 0:
                sides["ours_official_loop"] = (
                    lambda env, res=resource: our_worker(
                        logs, artifacts["ours"], fresh(), res, env, loop="runpod"
                    ),
                    jobs_ref[slots],
                    0,
                )
            for side, (start_worker, jobs, warmup) in sides.items():
                log(f"queue: {case}, {side}, {jobs} jobs (round {r + 1}/{rounds})")
                result = measure(logs, start_worker, jobs, warmup, slots, timeout=60 + jobs * 1.5)
                runs.setdefault(case, {}).setdefault(side, []).append(result)

    section.data = {"runs": runs}
    for case, sides in runs.items():
        slots = int(case.split("/c")[1])
        rate = {side: [x["jobs_per_s"] for x in xs] for side, xs in sides.items()}
        per_job = {side: [x["ms_per_job"] for x in xs] for side, xs in sides.items()}
        section.row(
            f"queue {case}: jobs/s",
            "jobs/s",
            summary(rate["ours"]),
            "reference",
            summary(rate["ref"]),
            "ours/ref",
            ratios(rate["ours"], rate["ref"]),
            [goal(">=", 50.0, "ratio", ">= 50x the reference")] if slots == 4 else [],
        )
        section.row(
            f"queue {case}: per-job overhead",
            "ms",
            summary(per_job["ours"]),
            "reference",
            summary(per_job["ref"]),
            "ref/ours",
            ratios(per_job["ref"], per_job["ours"]),
        )
        if "ours_official_loop" in rate:
            section.row(
                f"queue {case}: ours on the official loop",
                "jobs/s",
                summary(rate["ours_official_loop"]),
                "reference",
                summary(rate["ref"]),
                "ours/ref",
                ratios(rate["ours_official_loop"], rate["ref"][:1]),
            )
        note_failures(section, f"queue {case}", sides, "; its rate counts them anyway")
    section.seconds = time.perf_counter() - started
    return section


def note_failures(
    section: Section, label: str, sides: dict[str, list[dict[str, Any]]], also: str = ""
) -> None:
    """Notes for the runs of :func:`measure` whose jobs failed or broke the protocol."""
    for side, xs in sides.items():
        failed = [x for x in xs if x["failed"]]
        if failed:
            section.notes.append(
                f"{label}, {side}: {failed[0]['failed']} of {failed[0]['jobs']} jobs "
                f"returned an error ({failed[0]['failure']}){also}"
            )
        bad = [v for x in xs for v in x["violations"]]
        if bad:
            section.notes.append(f"{label} {side}: protocol violations: {bad[:3]}")
