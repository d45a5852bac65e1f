"""A load-balanced module whose import fails inside the worker (a missing model file, say)."""

import os

from runpod_flash import Endpoint

if os.environ.get("FLASH_RESOURCE_NAME"):  # only in the worker: the build imports this too
    raise RuntimeError("the model file is missing")

api = Endpoint(name="lb_import_error", cpu="cpu5c-4-8", workers=1)


@api.get("/hello")
async def hello() -> dict:
    return {"hello": "world"}
