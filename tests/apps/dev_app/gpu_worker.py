"""A queue-based endpoint for the `flash run` tests; VERSION marks which build answers."""

import logging

from runpod_flash import Endpoint, GpuGroup

VERSION = "v1"
log = logging.getLogger("dev_app")


@Endpoint(name="gpu_worker", gpu=GpuGroup.ANY, workers=(0, 1))
async def gpu_hello(message: str, repeat: int = 1) -> dict:
    """Say hello from the queue worker.

    Repeats the message `repeat` times.
    """
    print(f"hello job: {message}")
    log.warning("logged while serving the job")
    return {"message": message * repeat, "version": VERSION}
