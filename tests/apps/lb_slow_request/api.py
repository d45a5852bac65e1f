"""A request that takes a while, for graceful shutdown: it marks a file once it is running."""

import asyncio
from pathlib import Path

from runpod_flash import Endpoint

api = Endpoint(name="lb_slow_request", cpu="cpu5c-4-8", workers=1)


@api.post("/slow")
async def slow(marker: str, seconds: float = 2.0) -> dict:
    Path(marker).touch()
    await asyncio.sleep(seconds)
    return {"slept": seconds}
