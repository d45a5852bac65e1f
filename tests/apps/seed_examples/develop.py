# Seed 000, "Develop": a GPU queue-based endpoint, as written in the documentation.
from runpod_flash import Endpoint, GpuType


@Endpoint(
    name="inference-worker",
    gpu=GpuType.NVIDIA_GEFORCE_RTX_4090,
    workers=3,
    dependencies=["torch"]
)
def run_inference(prompt: str) -> dict:
    import torch  # noqa: F401  (only ever imported on the worker)
    # Your inference logic here
    return {"result": "..."}
