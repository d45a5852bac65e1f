"""Queue worker throughput: no-op jobs per second, our job loop against the official one.

    .venv/bin/python bench/queue_bench.py [--jobs 2000] [--official-jobs 12]

Builds ``tests/apps/qb_noop`` once, then for each loop (``FLASH_QUEUE_LOOP=flash|runpod``),
function kind (sync, async) and slot count (1, 4) starts a real worker (``python -m
flash_runtime.bootstrap``) against the loopback job server of the tests (``tests/jobserver.py``,
long-polling like production), warms it up, queues a batch of jobs at once and reports jobs per
second from the first job taken to the last result received, as the server saw them. The job
server runs in this process, so at high rates it is part of what is measured.

The official loop sleeps a second whenever its slots are full, so it gets far fewer jobs
(``--official-jobs``) to keep the run short. Nothing is asserted; see the tests for behaviour.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from conftest import build_app, start_worker  # noqa: E402
from jobserver import JobServer  # noqa: E402

RESOURCES = {  # (kind, slots) -> resource of tests/apps/qb_noop
    ("sync", 1): "noop-sync",
    ("async", 1): "noop-async",
    ("sync", 4): "noop-sync-4",
    ("async", 4): "noop-async-4",
}
OFFICIAL_LOOP_KNOBS = {"RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true", "RUNPOD_SKIP_GPU_CHECK": "true"}


def measure(artifact: Path, work: Path, loop: str, resource: str, jobs: int) -> float:
    with JobServer(hold=5.0) as server:
        env = {**server.worker_env(f"bench-{loop}", ping_ms=10_000), "FLASH_QUEUE_LOOP": loop}
        if loop == "runpod":
            env.update(OFFICIAL_LOOP_KNOBS)
        worker = start_worker(artifact, work / f"{loop}-{resource}", resource, extra_env=env)
        try:
            for job_id in [server.submit({}) for _ in range(4)]:  # warm-up
                server.wait(job_id, timeout=60)
            ids = [server.submit({}) for _ in range(jobs)]
            done = [server.wait(job_id, timeout=600) for job_id in ids]
        finally:
            worker.stop(timeout=30)
        if server.violations:
            raise SystemExit(f"protocol violations: {server.violations[:5]}")
    first = min(job.taken_at or 0.0 for job in done)
    last = max(job.done_at or 0.0 for job in done)
    return jobs / (last - first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per case, our loop")
    parser.add_argument("--official-jobs", type=int, default=12, help="jobs per case, runpod loop")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="queue-bench-"))
    os.environ.setdefault("FLASH_HOME", str(work / "flash_home"))
    try:
        artifact = build_app("qb_noop", work)
        print(f"{'loop':<8} {'function':<8} {'slots':>5} {'jobs':>6} {'jobs/s':>9}")
        for (kind, slots), resource in RESOURCES.items():
            for loop, jobs in (("flash", args.jobs), ("runpod", args.official_jobs)):
                rate = measure(artifact, work, loop, resource, jobs)
                print(f"{loop:<8} {kind:<8} {slots:>5} {jobs:>6} {rate:>9.1f}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")


if __name__ == "__main__":
    main()
