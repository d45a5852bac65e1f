"""A queue-based GPU endpoint: one function, called through /run (async) or /runsync.

`python gpu_worker.py` runs the function on a worker, as a script of the deployed app would (the
first run deploys the project to its `live` environment); `FLASH_CALLS=local python gpu_worker.py`
runs it on this machine. Deploy it with `flash deploy`.
"""

from runpod_flash import Endpoint, GpuGroup


# `dependencies` are installed into the artifact by `flash build`. torch is preinstalled in the
# GPU worker image, so the build leaves it out and the artifact stays small.
@Endpoint(name="gpu_worker", gpu=GpuGroup.ANY, workers=2, dependencies=["torch"])
async def gpu_hello(input_data: dict) -> dict:
    """Report the GPU this worker runs on."""
    # Import heavy packages inside the function: `flash build` imports this module to find the
    # endpoint, and torch need not be installed on your machine.
    import platform

    try:
        import torch

        available = torch.cuda.is_available()
        device = torch.cuda.get_device_name(0) if available else "no CUDA device visible"
    except ImportError:
        available, device = False, "torch is not installed here"

    return {
        "message": input_data.get("message", "hello from the GPU worker"),
        "gpu": {"available": available, "device": device},
        "python": platform.python_version(),
    }


if __name__ == "__main__":
    import asyncio

    print(asyncio.run(gpu_hello({"message": "hello from a script"})))
