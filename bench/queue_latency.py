"""The queue loop over real network latency: 5 ms jobs when the job server is a round trip away.

On Runpod the job server is across a network, not on loopback. Here the tests' job server (in
its own process, ``bench/jobserver_proc.py``) adds a one-way delay to every request and every
answer (25 ms by default: a 50 ms round trip). ``bench/apps/qb_work`` has an async function
that works for 5 ms, with one slot and with four; both packers build it and each runtime serves
it on one worker: ours (our job loop) and the reference (the official ``runpod`` loop, as its
image runs it).

Per-job overhead is the time per job beyond its share of the work, ``1 / rate - 5 ms / slots``
(rate: the steady jobs per second, :func:`bench.queue_bench.steady_rate`), as in the queue
section. What the network adds is that overhead less the same worker's with no delay; the goal
is at most one round trip, the round trip being measured (a ``GET`` of the delayed server's
ping route from here: the emulated 50 ms plus the event loop's timer slack), so that the
result's post never serialises with the next take.
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
    rtts: list[float] = []
    for r in range(rounds):
        rtts.append(measured_rtt(logs, delay))
        for slots, resource in CASES.items():
            sides: dict[str, tuple[Any, int, float]] = {
                "ours": (
                    lambda env, res=resource: queue_bench.our_worker(
                        logs, artifacts["ours"], fresh(), res, env
                    ),
                    jobs_ours[slots],
                    delay,
                ),
                "ours_no_delay": (
                    lambda env, res=resource: queue_bench.our_worker(
                        logs, artifacts["ours"], fresh(), res, env
                    ),
                    jobs_ours[slots],
                    0.0,
                ),
                "ref": (
                    lambda env, res=resource: queue_bench.ref_worker(
                        logs, ref, artifacts["ref"], fresh(), res, env
                    ),
                    jobs_ref[slots],
                    delay,
                ),
            }
            for side, (start_worker, jobs, side_delay) in sides.items():
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
                    delay=side_delay,
                )
                result["overhead_ms"] = result["ms_per_job"] - WORK_MS / slots
                runs.setdefault(slots, {}).setdefault(side, []).append(result)

    section.data = {"delay_s": delay, "rtt_ms": rtts, "runs": runs}
    rtt = summary(rtts)["median"]
    for slots, sides in runs.items():
        rate = {side: [x["jobs_per_s"] for x in xs] for side, xs in sides.items()}
        overhead = {side: [x["overhead_ms"] for x in xs] for side, xs in sides.items()}
        network = [a - b for a, b in zip(overhead["ours"], overhead["ours_no_delay"], strict=True)]
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
        )
        section.row(
            f"{label}: what the network adds per job (overhead less no delay's)",
            "ms",
            summary(network),
            "round trip",
            summary(rtts),
            "added/RTT",
            ratios(network, rtts),
            [goal("<=", 1.0, "ratio", f"<= one round trip (measured: {rtt:.1f} ms)")],
        )
        queue_bench.note_failures(section, f"latency c{slots}", sides)
    section.seconds = time.perf_counter() - started
    return section


def measured_rtt(logs: Path, delay: float, count: int = 20) -> float:
    """The median time of a ``GET`` of the delayed job server's ping route, in ms."""
    import urllib.request

    with queue_bench.JobServerProc(logs, delay=delay) as server:
        env = server.worker_env("rtt")
        url = env["RUNPOD_WEBHOOK_PING"].replace("$RUNPOD_POD_ID", "rtt")
        request = urllib.request.Request(
            url,
            headers={"Authorization": env["RUNPOD_AI_API_KEY"], "User-Agent": "RunPod-Python-SDK/"},
        )
        times = []
        for _ in range(count):
            started = time.perf_counter()
            with urllib.request.urlopen(request, timeout=10) as response:
                response.read()
            times.append(1000 * (time.perf_counter() - started))
    return float(summary(times)["median"])
