"""Queue-based functions that work for 5 ms, with one and four slots: the queue-over-latency
benchmark. Async, so the reference's sync-with-slots bug (its handler awaits a plain function's
result) does not decide the comparison."""

import asyncio

from runpod_flash import Endpoint


@Endpoint(name="work_5ms", cpu="cpu3c-1-2")
async def work_5ms() -> dict:
    await asyncio.sleep(0.005)
    return {"ok": True}


@Endpoint(name="work_5ms_4", cpu="cpu3c-1-2", max_concurrency=4)
async def work_5ms_4() -> dict:
    await asyncio.sleep(0.005)
    return {"ok": True}
