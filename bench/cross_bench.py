"""Cross-endpoint calls: what a call through the client adds over calling the target's URL.

    .venv/bin/python bench/cross_bench.py [--requests 1000] [--hits 200000]

Starts the local platform as ``flash platform start`` does (a real server subprocess) in a
temporary ``FLASH_HOME``, deploys ``tests/apps/cross_chain`` with the deployer, and, from this
process acting as a script of that project (``FLASH_CALLS=remote``), measures after a warm-up:

* **queue-based target** (``tokenize``, a plain ``def`` on the ``tokenizer`` endpoint):
  ``await tokenize("a b c")`` through the SDK and the client, against ``POST {url}/runsync`` with
  the same body sent by hand on a keep-alive aiohttp session;
* **load-balanced target** (the ``stats`` endpoint's ``POST /count``): ``await count(tokens)``
  against the same POST sent by hand;
* **discovery cache hit**: the lookup a call makes when the URL is cached, alone
  (``Discovery.resolve`` on a fresh entry), in µs.

Direct and client calls alternate, one at a time, so both see the same platform and worker state;
p50/p99 are client-side. The added latency is the difference of the percentiles. The client runs
on the same machine as the platform and the workers. Results are printed and written as JSON
(``--out``, default ``bench/results/cross_bench.json``). Nothing is asserted.
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent

from flash_runtime.calls.client import default_client  # noqa: E402
from flash_runtime.calls.context import context_for  # noqa: E402
from flash_runtime.deploy.deployer import deploy  # noqa: E402
from flash_runtime.deploy.target import local_target  # noqa: E402
from flash_runtime.platform import process  # noqa: E402
from flash_runtime.protocol.local import PlatformConfig  # noqa: E402
from flash_runtime.testing.net import free_port  # noqa: E402

TOKENS = ["a", "b", "c", "a"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(samples: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(samples, 50), 3),
        "p99_ms": round(percentile(samples, 99), 3),
        "mean_ms": round(statistics.fmean(samples), 3),
    }


async def paired(
    direct: Callable[[], Awaitable[Any]], client: Callable[[], Awaitable[Any]], n: int
) -> dict[str, Any]:
    for _ in range(100):  # warm-up: workers up, connections open, caches filled
        await direct()
        await client()
    times: dict[str, list[float]] = {"direct": [], "client": []}
    for _ in range(n):
        for name, call in (("direct", direct), ("client", client)):
            started = time.perf_counter()
            await call()
            times[name].append((time.perf_counter() - started) * 1000)
    direct_s, client_s = summary(times["direct"]), summary(times["client"])
    return {
        "requests": n,
        "direct": direct_s,
        "client": client_s,
        "added_p50_ms": round(client_s["p50_ms"] - direct_s["p50_ms"], 3),
        "added_p99_ms": round(client_s["p99_ms"] - direct_s["p99_ms"], 3),
    }


async def measure(config: PlatformConfig, urls: dict[str, str], args: argparse.Namespace) -> Any:
    from stats import count
    from tokenizer import tokenize

    headers = {"Authorization": f"Bearer {config.api_key}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers) as session:
        runsync = f"{urls['tokenizer']}/runsync"
        route = f"{urls['stats']}/count"

        async def direct_job() -> Any:
            async with session.post(runsync, json={"input": {"text": "a b c"}}) as resp:
                body = await resp.json()
            assert body["status"] == "COMPLETED", body
            return body["output"]

        async def direct_route() -> Any:
            async with session.post(route, json={"tokens": TOKENS}) as resp:
                assert resp.status == 200
                return await resp.json()

        async def client_job() -> Any:
            return await tokenize("a b c")

        async def client_route() -> Any:
            return await count(TOKENS)

        queue = await paired(direct_job, client_job, args.requests)
        balanced = await paired(direct_route, client_route, args.requests)

    client = default_client()
    discovery = client.discovery(context_for(tokenize.__wrapped__, "tokenizer"))
    session = await client.session()
    await discovery.resolve("tokenizer", session)
    started = time.perf_counter()
    for _ in range(args.hits):
        await discovery.resolve("tokenizer", session)
    hit_us = (time.perf_counter() - started) / args.hits * 1e6
    return {
        "queue_based": queue,
        "load_balanced": balanced,
        "discovery_cache_hit_us": round(hit_us, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--hits", type=int, default=200_000)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/cross_bench.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cross-bench-"))
    for name in [k for k in os.environ if k.startswith(("FLASH_", "RUNPOD_"))]:
        del os.environ[name]
    os.environ["FLASH_HOME"] = str(work / "flash")
    os.environ["FLASH_PLATFORM_URL"] = f"http://127.0.0.1:{free_port()}"
    os.environ["FLASH_LOG_LEVEL"] = "WARNING"
    config = PlatformConfig.load()
    project = work / "cross_chain"
    shutil.copytree(ROOT / "tests/apps/cross_chain", project)
    try:
        process.start(config)
        try:
            result = deploy(project, local_target())
            urls = {ep.resource: ep.url for ep in result.endpoints}
            os.environ["FLASH_CALLS"] = "remote"  # this process is a script of the project
            sys.path.insert(0, str(project))
            results = asyncio.run(measure(config, urls, args))
        finally:
            process.stop(config)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    report = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "targets": "tests/apps/cross_chain: tokenize (queue-based, plain def), POST /count (LB)",
        "results": results,
    }
    print(json.dumps(report, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
