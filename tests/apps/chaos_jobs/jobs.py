"""Short queue jobs on two workers, for the kill tests: each run prints its tag once."""

import asyncio

from runpod_flash import Endpoint


@Endpoint(name="chaos-jobs", cpu="cpu3c-1-2", workers=(2, 2))
async def work(tag: str, seconds: float = 0.2) -> dict:
    print(f"job {tag}: start", flush=True)
    await asyncio.sleep(seconds)
    return {"tag": tag}
