"""A load-balanced CPU endpoint: several HTTP routes served by the same workers.

Requests go straight to a worker, without a queue: POST a JSON body whose top-level fields are
the function's arguments, e.g. {"input_data": {"hello": "world"}} for /process.
"""

from runpod_flash import CpuInstanceType, Endpoint

# workers=(1, 3): keep one worker warm so requests never wait for a cold start, scale to three.
api = Endpoint(name="lb_worker", cpu=CpuInstanceType.CPU3C_1_2, workers=(1, 3))


@api.post("/process")
async def process(input_data: dict) -> dict:
    """Echo the input back, with the time the worker handled it."""
    import time

    return {
        "status": "success",
        "echo": input_data,
        "handled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


@api.get("/health")
async def health() -> dict:
    """A route of your own for uptime checks (the platform itself probes /ping)."""
    return {"status": "ok"}
