"""The queue loop over real network latency: 5 ms jobs when the job server is a round trip away.

On Runpod the job server is across a network, not on loopback. Here the tests' job server (in
its own process, ``bench/jobserver_proc.py``) adds a one-way delay to every request and every
answer (25 ms by default: a 50 ms round trip). ``bench/apps/qb_work`` has an async function
that works for 5 ms, with one slot and with four; both packers build it and each runtime serves
it on one worker: ours (our job loop) and the reference (the official ``runpod`` loop, as its
image runs it).

Per-job overhead is what a job costs a slot beyond its 5 ms of work: ``slots / rate - 5 ms``,
rate being the steady jobs per second (see :func:`bench.queue_bench.steady_rate`). The goal:
at most one round trip per job (the result's post must not serialise with the next take).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from . import queue_bench
from .common import Section, goal, log, ratios, summary
from .reference import RefEnv

WORK_MS = 5.0
CASES = {1: "work_5ms", 4: "work_5ms_4"}


def run(
    ref: RefEnv,
    work: Path,
    artifacts: dict[str, Path],
    *,
    rounds: int,
    jobs_ours: dict[int, int],
    jobs_ref: dict[int, int],
    delay: float = 0.025,
) -> Section:
    section = Section("latency")
    started = time.perf_counter()
    logs = work / "logs"
    counter = iter(range(1_000_000))
    rtt_ms = 2000 * delay

    def fresh() -> Path:
        return work / f"qbl-app-{next(counter)}"

    runs: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for r in range(rounds):
        for slots, resource in CASES.items():
            sides: dict[str, tuple[Any, int]] = {
                "ours": (
                    lambda env, res=resource: queue_bench.our_worker(
                        logs, artifacts["ours"], fresh(), res, env
                    ),
                    jobs_ours[slots],
                ),
                "ref": (
                    lambda env, res=resource: queue_bench.ref_worker(
                        logs, ref, artifacts["ref"], fresh(), res, env
                    ),
                    jobs_ref[slots],
                ),
            }
            for side, (start_worker, jobs) in sides.items():
                log(
                    f"queue over {rtt_ms:.0f} ms RTT: c{slots}, {side}, {jobs} jobs "
                    f"(round {r + 1}/{rounds})"
                )
                result = queue_bench.measure(
                    logs,
                    start_worker,
                    jobs,
                    8 if side == "ours" else 0,
                    slots,
                    timeout=60 + jobs * 1.5,
                    delay=delay,
                )
                result["overhead_ms"] = slots * result["ms_per_job"] - WORK_MS
                runs.setdefault(slots, {}).setdefault(side, []).append(result)

    section.data = {"delay_s": delay, "runs": runs}
    for slots, sides in runs.items():
        rate = {side: [x["jobs_per_s"] for x in xs] for side, xs in sides.items()}
        overhead = {side: [x["overhead_ms"] for x in xs] for side, xs in sides.items()}
        label = f"queue 5 ms jobs over a {rtt_ms:.0f} ms round trip, c{slots}"
        section.row(
            f"{label}: jobs/s",
            "jobs/s",
            summary(rate["ours"]),
            "reference",
            summary(rate["ref"]),
            "ours/ref",
            ratios(rate["ours"], rate["ref"]),
        )
        section.row(
            f"{label}: per-job overhead",
            "ms",
            summary(overhead["ours"]),
            "reference",
            summary(overhead["ref"]),
            "ref/ours",
            ratios(overhead["ref"], overhead["ours"]),
            [goal("<=", rtt_ms, "ours", f"<= one round trip ({rtt_ms:.0f} ms)")],
        )
        queue_bench.note_failures(section, f"latency c{slots}", sides)
    section.seconds = time.perf_counter() - started
    return section
