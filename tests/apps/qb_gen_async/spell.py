"""An async generator: its chunks are streamed; ``fail_at`` raises before that chunk."""

import asyncio
from collections.abc import AsyncIterator

from runpod_flash import Endpoint


@Endpoint(name="qb-gen-async", cpu="cpu3c-1-2")
async def spell(word: str, fail_at: int = -1) -> AsyncIterator[dict]:
    for i, letter in enumerate(word):
        if i == fail_at:
            raise ValueError(f"failed at {i}")
        await asyncio.sleep(0)
        yield {"index": i, "letter": letter}
