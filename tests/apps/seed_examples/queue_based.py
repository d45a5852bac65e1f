# Seed 000/002, "Queue-based example": one endpoint configuration per function.
from runpod_flash import Endpoint, GpuType

# Each queue-based function needs its own endpoint configuration
@Endpoint(name="preprocess", gpu=GpuType.NVIDIA_A100_80GB_PCIe)
def preprocess(data): ...

@Endpoint(name="inference", gpu=GpuType.NVIDIA_A100_80GB_PCIe)
def run_model(input): ...
