"""Alias of :mod:`flash_runtime`, so apps written for ``runpod_flash`` run unchanged."""

from flash_runtime import (
    ConfigurationError,
    CpuInstanceType,
    CudaVersion,
    DataCenter,
    Endpoint,
    FlashError,
    GpuGroup,
    GpuType,
    NetworkVolume,
    RemoteCallError,
    __version__,
)

__all__ = [
    "ConfigurationError",
    "CpuInstanceType",
    "CudaVersion",
    "DataCenter",
    "Endpoint",
    "FlashError",
    "GpuGroup",
    "GpuType",
    "NetworkVolume",
    "RemoteCallError",
    "__version__",
]
