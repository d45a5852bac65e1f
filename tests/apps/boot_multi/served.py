"""The resource the worker serves."""

import sys

from runpod_flash import Endpoint

api = Endpoint(name="served", cpu="cpu3c-1-2")


@api.get("/modules")
def modules(probe: str = "other") -> dict:
    return {"imported": probe in sys.modules}
