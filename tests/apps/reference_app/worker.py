"""A queue-based endpoint deployed by runpod-flash 1.21's own CLI; RELEASE marks the deploy."""

from runpod_flash import Endpoint

RELEASE = "v1"


@Endpoint(name="ref_worker", cpu="cpu3c-1-2")
async def shout(text: str) -> dict:
    return {"shout": text.upper(), "release": RELEASE}
