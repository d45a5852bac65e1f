"""A load-balanced endpoint whose code never finishes loading in the worker (a model download
that hangs, say): its /ping answers 204 for as long as the worker lives."""

import os
import time

from runpod_flash import Endpoint

if os.environ.get("FLASH_RESOURCE_NAME"):  # only in the worker: the build imports this too
    time.sleep(120)

api = Endpoint(name="lb_never_ready", cpu="cpu5c-4-8", workers=1)


@api.get("/hello")
async def hello() -> dict:
    return {"hello": "world"}
