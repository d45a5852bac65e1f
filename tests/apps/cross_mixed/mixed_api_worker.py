"""Seed 003, scenario 4: a load-balanced public API whose route calls a queue-based GPU function.

Both endpoints live in one file, as in the documentation; each deploys as its own endpoint, and
the route's call of ``gpu_compute`` leaves the API's worker for the GPU backend's.
"""

import os
import sys

from runpod_flash import Endpoint, GpuGroup

api = Endpoint(name="public-api", cpu="cpu5c-4-8", workers=(0, 1))


@api.post("/process")
async def handle_request(data: dict) -> dict:
    result = await gpu_compute(data)
    return {"result": result, "served_by": os.environ["FLASH_RESOURCE_NAME"]}


@api.get("/health")
def health() -> dict:
    # This worker calls another endpoint: it loaded the client while it booted.
    return {"status": "ok", "client_loaded": "flash_runtime.calls.client" in sys.modules}


@Endpoint(name="gpu-backend", gpu=GpuGroup.AMPERE_80, workers=(0, 1))
async def gpu_compute(data: dict) -> dict:
    if "fail" in data:
        raise ValueError(f"cannot compute {data['fail']!r}")
    return {
        "sum": sum(data.get("values", [])),
        "ran_on": os.environ["FLASH_RESOURCE_NAME"],
        # Whether this worker, which calls no other endpoint, ever loaded the client.
        "client_loaded": "flash_runtime.calls.client" in sys.modules,
        "has_key": "RUNPOD_API_KEY" in os.environ,
    }
