"""What logging costs a load-balanced worker: ``POST /process`` requests per second with request
lines off, on (text, the default) and on as JSON lines (``FLASH_LOG_FORMAT=json``).

``python -m bench.log_cost [--rounds N] [--seconds S]``: the template's ``lb_worker``, one worker
process at ``FLASH_LOG_LEVEL=INFO`` writing to a file (as the local platform's workers do), the
three variants alternating round by round, ``wrk -t1 -c32`` as in ``lb_bench``. Measures
requests per second and the worker's CPU time per request (``/proc/<pid>/stat``: less
sensitive than throughput to what else the machine runs). Prints medians and the ratio of each
variant to "off" per round pair; writes ``bench/results/log_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from .common import PYTHON, RESULTS, Proc, free_port, server_env, spawn, wait_first_200
from .lb_bench import RESOURCE, wrk

VARIANTS = {
    "off": {"FLASH_LOG_REQUESTS": "0"},
    "text": {},
    "json": {"FLASH_LOG_FORMAT": "json"},
}


def _launch(logs: Path, artifact: Path, app_dir: Path, extra: dict[str, str], port: int) -> Proc:
    env = server_env(
        {
            "FLASH_BUILD_ARTIFACT_PATH": str(artifact),
            "FLASH_APP_DIR": str(app_dir),
            "FLASH_RESOURCE_NAME": RESOURCE,
            "FLASH_ENDPOINT_TYPE": "lb",
            "FLASH_HOST": "127.0.0.1",
            "PORT": str(port),
            "FLASH_LOG_LEVEL": "INFO",
            "RUNPOD_ENDPOINT_ID": "bench-logs",
            "RUNPOD_POD_ID": "bench-worker",
            **extra,
        }
    )
    return spawn("ours-lb", [PYTHON, "-m", "flash_runtime.bootstrap"], env, logs, port=port)


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds the process has used (Linux)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _in_process(rounds: int = 7, n: int = 100_000) -> dict[str, float]:
    """Microseconds per request of the worker's ASGI entry (``Lifecycle``) around a no-op
    router, request lines off, text and JSON: the cost itself, without the machine's noise."""
    import asyncio
    import io
    import time

    from flash_runtime.worker.lb import Lifecycle
    from flash_runtime.worker.logs import RequestLog

    start = {"type": "http.response.start", "status": 200, "headers": [(b"x-request-id", b"r1")]}
    body = {"type": "http.response.body", "body": b"{}"}

    async def router(scope: Any, receive: Any, send: Any) -> None:
        await send(start)
        await send(body)

    async def send(message: Any) -> None:
        return None

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    async def run() -> dict[str, float]:
        times: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for _ in range(rounds):
            for name, extra in VARIANTS.items():
                log = RequestLog({**extra, "FLASH_LOG_LEVEL": "INFO"}, stream=io.StringIO())
                log.enabled = name != "off"
                app = Lifecycle(requests=log)
                app.router = router
                began = time.perf_counter()
                for _ in range(n):
                    await app({"type": "http", "method": "POST", "path": "/p", "headers": []},
                              receive, send)  # fmt: skip
                times[name].append((time.perf_counter() - began) / n * 1e6)
                log.close()
        return {name: statistics.median(values) for name, values in times.items()}

    import logging

    logging.getLogger("flash_runtime.access").setLevel(logging.INFO)
    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    from flash_runtime.pack import build
    from flash_runtime.pack.scaffold import init_project

    work = Path(tempfile.mkdtemp(prefix="flash-bench-logs-"))
    artifact = build(init_project(work / "hello")).artifact
    app_dir = work / "app"
    results: dict[str, list[float]] = {name: [] for name in VARIANTS}
    cpu: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, extra in VARIANTS.items():
            proc = _launch(work / "logs", artifact, app_dir, extra, free_port())
            try:
                wait_first_200(proc)
                assert proc.port is not None
                wrk(proc.port, 1, 32)  # warm-up
                before = _cpu_s(proc.popen.pid)
                rate = wrk(proc.port, args.seconds, 32)["requests_per_s"]
                used = _cpu_s(proc.popen.pid) - before
                results[name].append(rate)
                cpu[name].append(used / (rate * args.seconds) * 1e6)
            finally:
                proc.stop()
    out: dict[str, Any] = {"rounds": args.rounds, "seconds": args.seconds, "variants": {}}
    for name, values in results.items():
        ratios = [v / off for v, off in zip(values, results["off"], strict=True)]
        cpu_ratios = [v / off for v, off in zip(cpu[name], cpu["off"], strict=True)]
        out["variants"][name] = {
            "requests_per_s": values,
            "median": statistics.median(values),
            "ratio_to_off": ratios,
            "median_ratio": statistics.median(ratios),
            "cpu_us_per_request": cpu[name],
            "median_cpu_us": statistics.median(cpu[name]),
            "cpu_ratio_to_off": cpu_ratios,
        }
        print(f"{name:5} {statistics.median(values):8.0f} req/s [{min(values):.0f}-{max(values):.0f}]"
              f" vs off {statistics.median(ratios):.3f} [{min(ratios):.3f}-{max(ratios):.3f}];"
              f"  CPU {statistics.median(cpu[name]):.1f} us/request, vs off "
              f"{statistics.median(cpu_ratios):.3f} [{min(cpu_ratios):.3f}-{max(cpu_ratios):.3f}]")  # fmt: skip
    out["in_process_us_per_request"] = micro = _in_process()
    print("in process, the worker's entry around a no-op route: " + ", ".join(
        f"{name} {us:.2f} us" for name, us in micro.items()))  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "log_cost.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
