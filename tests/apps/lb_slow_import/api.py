"""A module that takes two seconds to import inside the worker (a model loading, say)."""

import os
import time

from runpod_flash import Endpoint

if os.environ.get("FLASH_RESOURCE_NAME"):  # only in the worker: the build imports this too
    time.sleep(2)

api = Endpoint(name="lb_slow_import", cpu="cpu5c-4-8", workers=1)


@api.get("/hello")
async def hello() -> dict:
    return {"hello": "world"}
