"""A second queue-based endpoint, which the redeploy tests remove."""

from runpod_flash import Endpoint


@Endpoint(name="jobs", cpu="cpu3c-1-2")
def count(items: list) -> dict:
    return {"count": len(items)}
