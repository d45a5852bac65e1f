"""Local platform round trip: ``/runsync`` latency and jobs per second for a no-op function.

    .venv/bin/python bench/platform_bench.py [--requests 2000] [--duration 10] [--concurrency 32]

Builds ``tests/apps/platform_noop``, records two endpoints of its ``platform-noop`` resource
(an ``async def`` returning ``None``) with exactly 1 and 2 workers, and starts the platform as
``flash platform start`` does (a real ``python -m flash_runtime.platform.server`` subprocess:
uvloop, httptools, SQLite in WAL mode) in a temporary ``FLASH_HOME``. The workers are real
bootstrap processes running our job loop. Then, per endpoint, after a warm-up:

* **latency**: ``--requests`` sequential ``POST /v2/{id}/runsync`` on one keep-alive
  connection: p50, p90, p99, max (ms), client-side;
* **throughput**: ``--concurrency`` clients sending ``/runsync`` back to back for
  ``--duration`` seconds: completed jobs per second.

Each job is written to SQLite three times (accepted, taken, finished) and crosses the platform
twice (client → platform → worker and back). The client runs in this process on the same
machine, so on a small machine it competes with the platform and the workers for CPU; the
number of CPUs is part of the results. Results are printed and written as JSON (``--out``,
default ``bench/results/platform_bench.json``). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent

from flash_runtime.platform import db, process  # noqa: E402
from flash_runtime.platform.model import EndpointSpec  # noqa: E402
from flash_runtime.platform.storage import save_endpoint  # noqa: E402
from flash_runtime.protocol.local import PlatformConfig  # noqa: E402
from flash_runtime.testing.net import free_port  # noqa: E402
from flash_runtime.testing.workers import build_app  # noqa: E402

ENDPOINTS = {1: "benchnoop1w000", 2: "benchnoop2w000"}
BODY = b'{"input": {}}'


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def wait_ready(session: aiohttp.ClientSession, url: str, workers: int) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        async with session.get(f"{url}/health") as resp:
            health = await resp.json()
        if health["workers"]["ready"] >= workers:
            return
        await asyncio.sleep(0.1)
    raise RuntimeError(f"{url}: workers not ready: {health}")


async def runsync(session: aiohttp.ClientSession, url: str) -> None:
    async with session.post(f"{url}/runsync", data=BODY) as resp:
        body = await resp.json()
    if body.get("status") != "COMPLETED":
        raise RuntimeError(f"runsync answered {body}")


async def latency(url: str, headers: dict[str, str], n: int) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        for _ in range(200):  # warm-up
            await runsync(session, url)
        samples = []
        for _ in range(n):
            started = time.perf_counter()
            await runsync(session, url)
            samples.append((time.perf_counter() - started) * 1000)
    return {
        "requests": n,
        "p50_ms": round(percentile(samples, 50), 3),
        "p90_ms": round(percentile(samples, 90), 3),
        "p99_ms": round(percentile(samples, 99), 3),
        "max_ms": round(max(samples), 3),
        "mean_ms": round(statistics.fmean(samples), 3),
    }


async def throughput(
    url: str, headers: dict[str, str], concurrency: int, duration: float
) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:
        await asyncio.gather(*(runsync(session, url) for _ in range(concurrency)))  # warm-up
        done = 0
        stop_at = time.perf_counter() + duration

        async def client() -> None:
            nonlocal done
            while time.perf_counter() < stop_at:
                await runsync(session, url)
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return {
        "concurrency": concurrency,
        "seconds": round(elapsed, 2),
        "jobs": done,
        "jobs_per_s": round(done / elapsed, 1),
    }


async def measure(config: PlatformConfig, args: argparse.Namespace) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {config.api_key}", "Content-Type": "application/json"}
    results: dict[str, Any] = {}
    for workers, endpoint_id in ENDPOINTS.items():
        url = f"{config.url}/v2/{endpoint_id}"
        async with aiohttp.ClientSession(headers=headers) as session:
            await wait_ready(session, url, workers)
        results[f"{workers}_worker{'s' if workers > 1 else ''}"] = {
            "runsync_latency": await latency(url, headers, args.requests),
            "runsync_throughput": await throughput(url, headers, args.concurrency, args.duration),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/platform_bench.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="platform-bench-"))
    os.environ["FLASH_HOME"] = str(work / "flash")
    os.environ["FLASH_PLATFORM_URL"] = f"http://127.0.0.1:{free_port()}"
    os.environ.setdefault("FLASH_LOG_LEVEL", "WARNING")
    # Workers in the platform's own environment: the endpoints are recorded here by hand, not
    # deployed, so no image environment is prepared for them (and this measures the platform).
    os.environ["FLASH_PLATFORM_WORKER_ENV"] = "platform"
    config = PlatformConfig.load()
    try:
        artifact = build_app(ROOT / "tests" / "apps" / "platform_noop", work)
        conn = db.connect(config.db_path)
        for workers, endpoint_id in ENDPOINTS.items():
            save_endpoint(
                conn,
                EndpointSpec(
                    id=endpoint_id,
                    name=f"noop-{workers}w",
                    resource_name="platform-noop",
                    type="qb",
                    app_id="bench",
                    environment_id="bench",
                    build_id="bench",
                    artifact_path=artifact,
                    workers_min=workers,
                    workers_max=workers,
                    idle_timeout=3600,
                ),
            )
        conn.close()
        process.start(config)
        try:
            results = asyncio.run(measure(config, args))
        finally:
            process.stop(config)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    report = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "function": "platform-noop (async def, returns None), our job loop, 1 slot per worker",
        "results": results,
    }
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
