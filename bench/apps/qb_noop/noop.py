"""No-op queue-based functions, sync and async, with one and four slots: the queue benchmark.

Each is its own endpoint (one function per queue-based endpoint), so a worker serves one of them.
"""

from runpod_flash import Endpoint


@Endpoint(name="noop_sync", cpu="cpu3c-1-2")
def noop_sync() -> None:
    return None


@Endpoint(name="noop_async", cpu="cpu3c-1-2")
async def noop_async() -> None:
    return None


@Endpoint(name="noop_sync_4", cpu="cpu3c-1-2", max_concurrency=4)
def noop_sync_4() -> None:
    return None


@Endpoint(name="noop_async_4", cpu="cpu3c-1-2", max_concurrency=4)
async def noop_async_4() -> None:
    return None
