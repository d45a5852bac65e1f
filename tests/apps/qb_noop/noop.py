"""No-op functions, sync and async, at one and four slots, for the queue benchmark."""

from runpod_flash import Endpoint


@Endpoint(name="noop-sync", cpu="cpu3c-1-2")
def noop_sync() -> None:
    return None


@Endpoint(name="noop-async", cpu="cpu3c-1-2")
async def noop_async() -> None:
    return None


@Endpoint(name="noop-sync-4", cpu="cpu3c-1-2", max_concurrency=4)
def noop_sync_4() -> None:
    return None


@Endpoint(name="noop-async-4", cpu="cpu3c-1-2", max_concurrency=4)
async def noop_async_4() -> None:
    return None
