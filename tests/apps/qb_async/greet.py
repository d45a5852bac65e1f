"""An async queue function; ``delay`` keeps it busy (for job-stop tests)."""

import asyncio

from runpod_flash import Endpoint


@Endpoint(name="qb-async", cpu="cpu3c-1-2")
async def greet(name: str, delay: float = 0.0) -> dict:
    await asyncio.sleep(delay)
    return {"greeting": f"hello {name}"}
