"""A queue endpoint whose module fails to import on a worker: its workers crash at boot.

(It imports fine where ``flash build`` discovers it, outside a worker.)
"""

import os

from runpod_flash import Endpoint

if os.environ.get("RUNPOD_ENDPOINT_ID"):
    raise RuntimeError("platform_broken fails at import on purpose")


@Endpoint(name="platform-broken", cpu="cpu3c-1-2")
async def never() -> None:
    return None
