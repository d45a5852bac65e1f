"""Worker cold start: from process creation to the first successful response.

Each runtime boots the template's artifact built by its own packer and extracts it into a new
directory every run, as a new worker does:

* **load-balanced** (``lb_worker``): until ``POST /process`` first answers 200 (polled every
  millisecond; refused connections and 503s are retried): ours (``python -m
  flash_runtime.bootstrap``), the reference (its image's ``uvicorn lb_handler:app``, see
  ``bench/refimage``), and the baseline, ``python -m uvicorn`` serving the bare Starlette app.
  Also ours on an already extracted directory (``FLASH_DISABLE_UNPACK=1``), for information.
* **queue-based** (``cpu_worker``): a job is queued on the job server first; until the
  server receives its result: ours (our job loop) and the reference (its image's ``python
  handler.py``, official runpod loop).

A discarded first round fills the bytecode cache of the libraries (``PYTHONPYCACHEPREFIX``,
kept in ``bench/.cache/pycache``), so every run starts as in a built image; ``--quick`` leaves
the reference out of it once an earlier run has filled the cache. The rounds interleave the
variants. Each round runs ours and the baseline ``repeats`` times (they take a tenth of a second)
and the reference once; ratios to the baseline pair runs, ratios to the reference pair each of
its runs with the median of ours in the same round.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from . import lb_bench, queue_bench
from .common import (
    CACHE,
    Proc,
    Section,
    free_port,
    goal,
    log,
    ratios,
    summary,
    wait_first_200,
)
from .reference import VERSION, RefEnv

QB_RESOURCE = "cpu_worker"
QB_INPUT = {"input_data": {"message": "cold start", "text": "to be or not to be"}}


def _lb_once(launch: lb_bench.Launcher) -> float:
    proc = launch(free_port())
    try:
        return wait_first_200(proc) - proc.started
    finally:
        proc.stop()


def _qb_once(server: queue_bench.JobServerProc, start: Callable[[dict[str, str]], Proc]) -> float:
    ids = server.submit(QB_INPUT)
    worker = start(server.worker_env(f"cold-{time.monotonic_ns()}"))
    try:
        done = server.wait(ids, timeout=120)
        result = (done.get("results") or {}).get(ids[0]) or {}
        if "output" not in result or "error" in result:
            raise RuntimeError(f"{worker.name}: unexpected result {result}\n{worker.log()}")
        return float(done["last_done"]) - worker.started
    except Exception as err:
        raise RuntimeError(f"{worker.name}: {err}\n{worker.log()}") from err
    finally:
        worker.stop(timeout=0)  # stopping is not measured


def run(
    ref: RefEnv,
    work: Path,
    artifacts: dict[str, Path],
    *,
    rounds: int,
    repeats: int = 3,
    quick: bool = False,
) -> Section:
    section = Section("cold")
    started = time.perf_counter()
    logs = work / "logs"
    counter = itertools.count()

    def fresh() -> Path:
        return work / f"cold-app-{next(counter)}"

    extracted = work / "cold-extracted"
    last: dict[str, Path] = {}

    def remember(name: str) -> Callable[[], Path]:
        def make() -> Path:
            last[name] = fresh()
            return last[name]

        return make

    lb: dict[str, lb_bench.Launcher] = {
        "bare": lb_bench.bare(logs),
        "ours": lb_bench.ours(logs, artifacts["ours"], remember("ours")),
        "ours_extracted": lb_bench.ours(logs, artifacts["ours"], lambda: extracted, unpack=False),
        "ref": lb_bench.reference(logs, ref, artifacts["ref"], remember("ref")),
    }
    qb: dict[str, Callable[[dict[str, str]], Proc]] = {
        "ours": lambda env: queue_bench.our_worker(
            logs, artifacts["ours"], fresh(), QB_RESOURCE, env
        ),
        "ref": lambda env: queue_bench.ref_worker(
            logs, ref, artifacts["ref"], fresh(), QB_RESOURCE, env
        ),
    }
    # the extracted directory for ours_extracted, and the discarded warm-up round
    _lb_once(lb_bench.ours(logs, artifacts["ours"], lambda: extracted))
    # per kind and variant, one list of run times per round
    times: dict[str, dict[str, list[list[float]]]] = {
        "lb": {n: [] for n in lb},
        "qb": {n: [] for n in qb},
    }
    # --quick leaves the reference out of the warm-up round once a run has filled the cache
    warm_marker = CACHE / "pycache" / f".warm-reference-{VERSION}"
    skip_ref_warmup = quick and warm_marker.is_file()
    with queue_bench.JobServerProc(logs, hold=1.0) as server:
        for r in range(rounds + 1):
            label = "warm-up round" if r == 0 else f"round {r}/{rounds}"
            log(f"cold start: {label}")
            for variants in times.values():
                for per_round in variants.values():
                    per_round.append([])
            # ours and the baseline take a tenth of a second: several runs per round
            for n in range(1 if r == 0 else repeats):
                skip_ref = n > 0 or (r == 0 and skip_ref_warmup)
                for name, launch in lb.items():
                    if not (name == "ref" and skip_ref):
                        times["lb"][name][-1].append(_lb_once(launch))
                for name, start in qb.items():
                    if not (name == "ref" and skip_ref):
                        times["qb"][name][-1].append(_qb_once(server, start))
            if r == 0:
                warm_marker.parent.mkdir(parents=True, exist_ok=True)
                warm_marker.touch()
                for variants in times.values():
                    for per_round in variants.values():
                        per_round.pop()  # the warm-up round is not counted
        violations = server.violations()
    if violations:
        section.notes.append(f"cold start QB: protocol violations: {violations[:3]}")

    def runs(kind: str, name: str) -> list[float]:
        return [t for per_round in times[kind][name] for t in per_round]

    def by_round(kind: str, name: str) -> list[float]:
        return [statistics.median(per_round) for per_round in times[kind][name]]

    section.data = {
        kind: {name: summary(runs(kind, name)) for name in variants}
        for kind, variants in times.items()
    }
    section.handoff["lb_app_dirs"] = dict(last)  # extracted by each runtime: for lb_bench
    lb_t = {name: runs("lb", name) for name in lb}
    qb_t = {name: runs("qb", name) for name in qb}
    section.row(
        "cold start LB vs bare uvicorn+Starlette",
        "s",
        summary(lb_t["ours"]),
        "bare Starlette",
        summary(lb_t["bare"]),
        "ours/bare",
        ratios(lb_t["ours"], lb_t["bare"]),
        [goal("<=", 1.1, "ratio", "<= 1.1x bare uvicorn+Starlette")],
    )
    section.row(
        "cold start LB vs reference",
        "s",
        summary(lb_t["ours"]),
        "reference",
        summary(lb_t["ref"]),
        "ref/ours",
        ratios(lb_t["ref"], by_round("lb", "ours")),
        [goal(">=", 10.0, "ratio", "< 1/10 of the reference's")],
    )
    section.row(
        "cold start LB, already extracted (info)",
        "s",
        summary(lb_t["ours_extracted"]),
        "bare Starlette",
        summary(lb_t["bare"]),
        "ours/bare",
        ratios(lb_t["ours_extracted"], lb_t["bare"]),
    )
    section.row(
        "cold start QB vs reference",
        "s",
        summary(qb_t["ours"]),
        "reference",
        summary(qb_t["ref"]),
        "ref/ours",
        ratios(qb_t["ref"], by_round("qb", "ours")),
        [
            goal("<=", 0.5, "ours", "< 0.5 s"),
            goal(">=", 10.0, "ratio", "< 1/10 of the reference's"),
        ],
    )
    section.seconds = time.perf_counter() - started
    return section
