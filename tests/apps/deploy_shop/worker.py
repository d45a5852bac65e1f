"""A queue-based endpoint; RELEASE marks which deploy of the app answers."""

import asyncio

from runpod_flash import Endpoint

RELEASE = "v1"


@Endpoint(name="worker", cpu="cpu3c-1-2", workers=(0, 1))
async def shout(text: str, delay: float = 0.0) -> dict:
    await asyncio.sleep(delay)
    return {"shout": text.upper(), "release": RELEASE}
