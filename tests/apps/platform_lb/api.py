"""A load-balanced endpoint: a JSON echo, a streamed response, and which worker answered."""

import asyncio
import os

from runpod_flash import Endpoint

api = Endpoint(name="platform-lb", cpu="cpu5c-4-8", workers=(0, 2))


@api.post("/echo")
async def echo(data: dict) -> dict:
    return {"echo": data, "worker": os.environ.get("RUNPOD_POD_ID")}


@api.get("/count")
async def count(n: int = 3):
    for i in range(n):
        await asyncio.sleep(0.05)
        yield {"i": i}


@api.get("/slow")
async def slow(seconds: float = 0.5) -> dict:
    await asyncio.sleep(seconds)
    return {"worker": os.environ.get("RUNPOD_POD_ID")}
