"""A GPU queue endpoint that reports the devices its worker was given."""

import os

from runpod_flash import Endpoint, GpuGroup


@Endpoint(name="gpu-devices", gpu=GpuGroup.AMPERE_80)
def devices() -> dict:
    return {
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "worker": os.environ.get("RUNPOD_POD_ID"),
    }
