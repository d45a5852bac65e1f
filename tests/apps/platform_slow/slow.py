"""Slow queue endpoints for kill, cancel and timeout tests: they print progress as they go."""

import asyncio
import os

from runpod_flash import Endpoint


@Endpoint(name="platform-slow", cpu="cpu3c-1-2")
async def slow(seconds: float = 1.0, tag: str = "") -> dict:
    steps = max(1, int(seconds / 0.1))
    for step in range(steps):
        print(f"job {tag}: step {step + 1}/{steps}", flush=True)
        await asyncio.sleep(seconds / steps)
    return {"tag": tag, "worker": os.environ.get("RUNPOD_POD_ID")}


@Endpoint(name="platform-count", cpu="cpu3c-1-2")
async def count(n: int = 3, delay: float = 0.05):
    for i in range(n):
        await asyncio.sleep(delay)
        yield {"i": i}
