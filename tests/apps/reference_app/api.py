"""A load-balanced endpoint deployed by runpod-flash 1.21's own CLI."""

from runpod_flash import Endpoint

RELEASE = "v1"

api = Endpoint(name="ref_api", cpu="cpu3c-1-2", workers=(1, 2))


@api.get("/release")
async def release() -> dict:
    return {"release": RELEASE}
