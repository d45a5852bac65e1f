"""Another resource: a worker of `served` must never import this module."""

import os

from runpod_flash import Endpoint

if os.environ.get("FLASH_RESOURCE_NAME") == "served":
    raise RuntimeError("other.py was imported by a worker of another resource")


@Endpoint(name="other", cpu="cpu3c-1-2")
def unrelated() -> str:
    return "unrelated"
