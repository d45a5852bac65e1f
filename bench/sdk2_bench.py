"""Runpod SDK 2.0 apps: cold start and no-op queue throughput on our runtime, beside the 2.0
runtime's approach.

``bench/apps/sdk2_noop`` is built by the real 2.0 client (``rp flash deploy --build-only``, in
its own virtual environment, offline from the wheelhouse ``flash_runtime.testing.sdk2`` makes;
the artifact is cached by source and SDK version). Its workers:

* **ours**: ``python -m flash_runtime.bootstrap``, which boots the 2.0 artifact through its second
  front end (``worker/apps.py``) onto our job loop;
* **the 2.0 runtime's approach**: what ``runpod-sdk-runtime`` does (it is not on PyPI), the same
  handler on the official ``runpod.serverless.start`` loop of the SDK the artifact vendors
  (``FLASH_QUEUE_LOOP=runpod``: the artifact's ``env/`` is first on the path, so that loop is
  2.0's).

Cold start is a worker's start to its first job's result (the job queued first); throughput is
jobs/s for a batch of no-op jobs after a warm-up, fed by the same job server as the 1.x queue
section (``bench/queue_bench.py``), which this section sits beside: the 1.x figures there show
the first front end did not pay for the second.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from flash_runtime.testing.sdk2 import PY, build_artifact, default_root, ensure_sdk2

from . import queue_bench
from .common import APPS, CACHE, ROOT, Proc, Section, log, ratios, summary

APP = APPS / "sdk2_noop"
CASES = {1: "noop", 4: "noop_4"}


def artifact() -> Path:
    """The app's 2.0 artifact, built by ``rp`` once per (source, SDK version, Python)."""
    sdk = ensure_sdk2(default_root(ROOT / "build"))
    log("sdk2: bench/apps/sdk2_noop as rp flash deploy --build-only builds it (cached)")
    return build_artifact(APP, PY, CACHE / "sdk2-builds", sdk)


def _cold_once(server: queue_bench.JobServerProc, start: Any) -> float:
    ids = server.submit({})
    worker: Proc = start(server.worker_env(f"sdk2-cold-{time.monotonic_ns()}"))
    try:
        done = server.wait(ids, timeout=120)
        result = (done.get("results") or {}).get(ids[0]) or {}
        if "error" in result:
            raise RuntimeError(f"{worker.name}: unexpected result {result}\n{worker.log()}")
        return float(done["last_done"]) - worker.started
    except Exception as err:
        raise RuntimeError(f"{worker.name}: {err}\n{worker.log()}") from err
    finally:
        worker.stop(timeout=0)


def run(work: Path, *, rounds: int, jobs_ours: int, jobs_official: dict[int, int]) -> Section:
    section = Section("sdk2")
    started = time.perf_counter()
    logs = work / "logs"
    try:
        built = artifact()
    except Exception as err:  # no SDK environment (it needs PyPI once): a note, not a failure
        section.notes.append(f"Runpod SDK 2.0 apps: not measured ({str(err)[-300:]})")
        return section
    counter = iter(range(1_000_000))

    def worker(resource: str, loop: str) -> Any:
        return lambda env: queue_bench.our_worker(
            logs, built, work / f"sdk2-app-{next(counter)}", resource, env, loop=loop
        )

    cold: dict[str, list[float]] = {"ours": [], "official": []}
    rate: dict[int, dict[str, list[float]]] = {n: {"ours": [], "official": []} for n in CASES}
    for r in range(rounds):
        with queue_bench.JobServerProc(logs) as server:
            for side, loop in (("ours", "flash"), ("official", "runpod")):
                log(f"sdk2: cold start, {side} (round {r + 1}/{rounds})")
                cold[side].append(_cold_once(server, worker("noop", loop)))
        for slots, resource in CASES.items():
            for side, loop, jobs, warmup in (
                ("ours", "flash", jobs_ours, 20),
                ("official", "runpod", jobs_official[slots], 0),
            ):
                log(f"sdk2: c{slots}, {side}, {jobs} jobs (round {r + 1}/{rounds})")
                result = queue_bench.measure(
                    logs, worker(resource, loop), jobs, warmup, slots, timeout=60 + jobs * 1.5
                )
                rate[slots][side].append(result["jobs_per_s"])
    section.data = {"cold_s": cold, "jobs_per_s": {str(k): v for k, v in rate.items()}}
    section.row(
        "2.0 app queue cold start (first job's result)",
        "s",
        summary(cold["ours"]),
        "2.0 runtime's loop",
        summary(cold["official"]),
        "official/ours",
        ratios(cold["official"], cold["ours"]),
    )
    for slots in CASES:
        section.row(
            f"2.0 app queue c{slots}: no-op jobs/s",
            "jobs/s",
            summary(rate[slots]["ours"]),
            "2.0 runtime's loop",
            summary(rate[slots]["official"]),
            "ours/official",
            ratios(rate[slots]["ours"], rate[slots]["official"]),
        )
    section.seconds = time.perf_counter() - started
    return section
