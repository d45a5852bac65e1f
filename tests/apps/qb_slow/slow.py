"""A slow sync function with two slots: it reports when it started and finished."""

import time

from runpod_flash import Endpoint


@Endpoint(name="qb-slow", cpu="cpu3c-1-2", max_concurrency=2)
def slow(seconds: float = 0.5) -> dict:
    started = time.time()
    time.sleep(seconds)
    return {"started": started, "finished": time.time()}
