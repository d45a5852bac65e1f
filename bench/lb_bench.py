"""Load-balanced routing: requests per second and p50/p99 latency of ``POST /process``.

One worker process of each, serving the template's ``lb_worker.py`` (``/process`` echoes its
``input_data`` with a timestamp):

* **ours**: ``python -m flash_runtime.bootstrap`` on our artifact (extracted beforehand:
  ``FLASH_DISABLE_UNPACK=1``), which runs uvicorn itself with the settings below;
* **reference**: the FastAPI app the reference's ``flash build`` generated
  (``handler_lb_worker.py``), loaded as its image loads it (``bench/refimage/flashref_lb.py``),
  under ``python -m uvicorn`` in the reference's environment;
* **bare**: ``bench/bare_starlette_app.py``, Starlette + orjson doing the same work by hand,
  the ceiling, under ``python -m uvicorn``.

Same uvicorn everywhere (same version, uvloop, httptools) and the same settings: no access
log, no proxy headers, no server header, lifespan and websockets off. The load is ``wrk -t1
-c32 -d<s>s --latency -s bench/post_process.lua``: wrk because it is a C client that needs one
thread to saturate one Python worker, so on two cores the client takes one and the server the
other, and it reports latency percentiles from a full histogram; hey and oha are Go/Rust with
their own runtimes' scheduling, and are not packaged for Debian as wrk is. Servers alternate
round by round, each after a 1 s warm-up, so drift on a shared machine hits all of them alike.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .common import (
    BENCH,
    PYTHON,
    UVICORN_FLAGS,
    Proc,
    Section,
    free_port,
    goal,
    log,
    post_process,
    ratios,
    server_env,
    spawn,
    summary,
    wait_first_200,
)
from .reference import RefEnv

RESOURCE = "lb_worker"
WRK_INSTALL = (
    "sudo apt-get update && sudo apt-get install -y wrk  (Debian/Ubuntu; macOS: brew install wrk)"
)

Launcher = Callable[[int], Proc]


def bare(logs: Path) -> Launcher:
    def launch(port: int) -> Proc:
        cmd = [
            PYTHON, "-m", "uvicorn", "bare_starlette_app:app", "--app-dir", str(BENCH),
            "--host", "127.0.0.1", "--port", str(port), *UVICORN_FLAGS,
        ]  # fmt: skip
        return spawn("bare", cmd, server_env(), logs, port=port)

    return launch


def _worker_env(
    base: dict[str, str] | None, artifact: Path, app_dir: Path, unpack: bool, endpoint: str
) -> dict[str, str]:
    """What both runtimes' load-balanced workers are given (the image contract's variables)."""
    env = dict(base if base is not None else server_env())
    env.update(
        {
            "FLASH_BUILD_ARTIFACT_PATH": str(artifact),
            "FLASH_APP_DIR": str(app_dir),
            "FLASH_RESOURCE_NAME": RESOURCE,
            "FLASH_ENDPOINT_TYPE": "lb",
            "RUNPOD_ENDPOINT_ID": endpoint,
        }
    )
    if not unpack:
        env["FLASH_DISABLE_UNPACK"] = "1"
    return env


def ours(
    logs: Path,
    artifact: Path,
    app_dir: Callable[[], Path],
    unpack: bool = True,
    base: dict[str, str] | None = None,
) -> Launcher:
    """Our worker; ``app_dir()`` is called per start (a new directory: extraction included).
    ``base`` replaces :func:`server_env`'s environment."""

    def launch(port: int) -> Proc:
        env = _worker_env(base, artifact, app_dir(), unpack, "bench-ours")
        env.update({"FLASH_HOST": "127.0.0.1", "PORT": str(port), "FLASH_LOG_LEVEL": "WARNING"})
        return spawn("ours-lb", [PYTHON, "-m", "flash_runtime.bootstrap"], env, logs, port=port)

    return launch


def reference(
    logs: Path,
    ref: RefEnv,
    artifact: Path,
    app_dir: Callable[[], Path],
    unpack: bool = True,
    base: dict[str, str] | None = None,
) -> Launcher:
    def launch(port: int) -> Proc:
        env = ref.env(_worker_env(base, artifact, app_dir(), unpack, "bench-ref"))
        cmd = [
            ref.python, "-m", "uvicorn", "flashref_lb:app", "--app-dir", str(BENCH / "refimage"),
            "--host", "127.0.0.1", "--port", str(port), *UVICORN_FLAGS,
        ]  # fmt: skip
        return spawn("ref-lb", cmd, env, logs, port=port)

    return launch


def check_wrk() -> str | None:
    """None when wrk is there, else how to install it."""
    return None if shutil.which("wrk") else WRK_INSTALL


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _find(pattern: str, text: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise ValueError(f"no {pattern!r} in wrk's output:\n{text}")
    return match.group(1)


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"not a wrk latency: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def wrk(port: int, duration: float, connections: int) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{duration:g}s",
            "--latency",
            "-s",
            str(BENCH / "post_process.lua"),
            f"http://127.0.0.1:{port}/process",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests_per_s": float(_find(r"Requests/sec:\s+([\d.]+)", out)),
        "p50_ms": _ms(_find(r"\s50%\s+(\S+)", out)),
        "p99_ms": _ms(_find(r"\s99%\s+(\S+)", out)),
        "non_2xx": float(errors.group(1)) if errors else 0.0,
        "socket_errors": socket_errors.group(1) if socket_errors else "",
    }


def throughput(launch: Launcher, duration: float, connections: int) -> dict[str, Any]:
    proc = launch(free_port())
    try:
        wait_first_200(proc)
        assert proc.port is not None
        _, sample = post_process(proc.port)
        wrk(proc.port, 1, connections)  # warm-up
        result: dict[str, Any] = dict(wrk(proc.port, duration, connections))
        result["sample"] = sample.decode(errors="replace")[:300]
        proc.check_alive()
        return result
    finally:
        proc.stop()


def run(
    ref: RefEnv,
    work: Path,
    artifacts: dict[str, Path],
    *,
    rounds: int,
    duration: float,
    connections: int = 32,
    extracted: dict[str, Path] | None = None,
) -> Section:
    section = Section("lb")
    started = time.perf_counter()
    missing = check_wrk()
    if missing:
        section.notes.append(f"wrk is not installed, LB throughput skipped; install it: {missing}")
        return section
    logs = work / "logs"
    # Directories each runtime extracted its artifact into (extraction is the cold-start
    # benchmark's): the cold start's, else a first start of each worker here.
    extracted = extracted or {}
    ours_dir = extracted.get("ours") or work / "lb-ours-app"
    ref_dir = extracted.get("ref") or work / "lb-ref-app"
    for name, launch in (
        ("ours", ours(logs, artifacts["ours"], lambda: ours_dir)),
        ("ref", reference(logs, ref, artifacts["ref"], lambda: ref_dir)),
    ):
        if name in extracted:
            continue
        proc = launch(free_port())
        try:
            wait_first_200(proc)
        finally:
            proc.stop()
    servers: dict[str, Launcher] = {
        "bare": bare(logs),
        "ours": ours(logs, artifacts["ours"], lambda: ours_dir, unpack=False),
        "ref": reference(logs, ref, artifacts["ref"], lambda: ref_dir, unpack=False),
    }
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
    for r in range(rounds):
        for name, launch in servers.items():
            log(f"lb: wrk against {name} (round {r + 1}/{rounds})")
            results[name].append(throughput(launch, duration, connections))

    def col(name: str, key: str) -> list[float]:
        return [float(x[key]) for x in results[name]]

    section.data = {
        "wrk": f"wrk -t1 -c{connections} -d{duration:g}s --latency -s bench/post_process.lua",
        "runs": results,
    }
    rps = {name: col(name, "requests_per_s") for name in servers}
    section.row(
        "LB /process throughput vs reference",
        "req/s",
        summary(rps["ours"]),
        "reference",
        summary(rps["ref"]),
        "ours/ref",
        ratios(rps["ours"], rps["ref"]),
        [goal(">=", 4.0, "ratio", ">= 4x the reference")],
    )
    section.row(
        "LB /process throughput vs bare Starlette",
        "req/s",
        summary(rps["ours"]),
        "bare Starlette",
        summary(rps["bare"]),
        "ours/bare",
        ratios(rps["ours"], rps["bare"]),
        [goal(">=", 1.0, "ratio", ">= 1.0x bare Starlette")],
    )
    for pct in ("p50", "p99"):
        key = f"{pct}_ms"
        section.row(
            f"LB /process latency {pct} vs reference",
            "ms",
            summary(col("ours", key)),
            "reference",
            summary(col("ref", key)),
            "ref/ours",
            ratios(col("ref", key), col("ours", key)),
        )
        section.row(
            f"LB /process latency {pct} vs bare Starlette",
            "ms",
            summary(col("ours", key)),
            "bare Starlette",
            summary(col("bare", key)),
            "bare/ours",
            ratios(col("bare", key), col("ours", key)),
        )
    errors = {n: sum(x["non_2xx"] for x in results[n]) for n in servers}
    if any(errors.values()):
        section.notes.append(f"non-2xx responses under load: {errors}")
    section.seconds = time.perf_counter() - started
    return section
