"""Streaming routes: sync and async generators, text chunks, and a stream that fails."""

import asyncio

from runpod_flash import Endpoint

api = Endpoint(name="lb_stream", cpu="cpu5c-4-8", workers=1)


@api.get("/count")
def count(n: int = 3):
    for i in range(n):
        yield {"i": i}


@api.post("/tokens")
async def tokens(prompt: str):
    for word in prompt.split():
        await asyncio.sleep(0)
        yield {"token": word}


@api.get("/text")
def text():
    yield "hello "
    yield "world"


@api.get("/broken")
async def broken():
    yield {"i": 0}
    raise RuntimeError("stream broke")
