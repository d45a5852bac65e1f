"""Queue-based GPU endpoint that imports its heavy package inside the function, as documented."""

from runpod_flash import Endpoint, GpuType


@Endpoint(
    name="gpu_worker",
    gpu=GpuType.NVIDIA_GEFORCE_RTX_4090,
    workers=3,
    dependencies=["torch", "flash-test-heavy-package==1.0"],
    env={"MODEL": "tiny"},
    execution_timeout_ms=30000,
)
async def gpu_hello(prompt: str) -> dict:
    import flash_test_heavy_package  # not installed anywhere: must not matter at build time

    return {"echo": prompt, "heavy": flash_test_heavy_package.__name__}


if __name__ == "__main__":
    raise SystemExit("the __main__ block must never run during discovery")
