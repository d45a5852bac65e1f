"""Queue endpoints that return at once: an echo for API tests, a no-op for the benchmark."""

from runpod_flash import Endpoint


@Endpoint(name="platform-echo", cpu="cpu3c-1-2")
async def echo(value: object = None) -> dict:
    return {"echo": value}


@Endpoint(name="platform-noop", cpu="cpu3c-1-2")
async def noop() -> None:
    return None
