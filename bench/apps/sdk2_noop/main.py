"""A Runpod SDK 2.0 app of no-op queue functions: one slot (sync), four slots (async)."""

from runpod import App

app = App("bench-sdk2")


@app.queue(name="noop", cpu="cpu3c-2-4")
def noop(**_: object) -> dict:
    return {}


@app.queue(name="noop_4", cpu="cpu3c-2-4", max_concurrency=4)
async def noop_4(**_: object) -> dict:
    return {}
