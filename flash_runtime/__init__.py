"""flash_runtime: the Runpod Flash SDK, worker runtime, packer, deployer and local platform.

The public API is this short list; everything else is internal and may move. Names are loaded
on first use so that ``import flash_runtime`` (which every worker does) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

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

_HOMES = {
    "Endpoint": "endpoint",
    "CpuInstanceType": "resources",
    "CudaVersion": "resources",
    "DataCenter": "resources",
    "GpuGroup": "resources",
    "GpuType": "resources",
    "NetworkVolume": "resources",
    "ConfigurationError": "errors",
    "FlashError": "errors",
    "RemoteCallError": "errors",
}

if TYPE_CHECKING:
    from .endpoint import Endpoint
    from .errors import ConfigurationError, FlashError, RemoteCallError
    from .resources import (
        CpuInstanceType,
        CudaVersion,
        DataCenter,
        GpuGroup,
        GpuType,
        NetworkVolume,
    )


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'flash_runtime' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
