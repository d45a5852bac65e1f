"""flash_runtime: the Runpod Flash SDK, worker runtime, packer, deployer and local platform.

The public API is this short list; everything else is internal and may move. Names are loaded
on first use so that ``import flash_runtime`` (which every worker does) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_HOMES = {
    "Endpoint": "endpoint",
    "EndpointJob": "calls.jobs",
    "CpuInstanceType": "resources",
    "CudaVersion": "resources",
    "DataCenter": "resources",
    "GpuGroup": "resources",
    "GpuType": "resources",
    "NetworkVolume": "resources",
    "PodTemplate": "resources",
    "ServerlessScalerType": "resources",
    "ServerlessType": "resources",
    "CPU_DATACENTERS": "resources",
    "DEFAULT_WORKERS_MIN": "resources",
    "DEFAULT_WORKERS_MAX": "resources",
    "ConfigurationError": "errors",
    "FlashError": "errors",
    "RemoteCallError": "errors",
    # runpod-flash's older, deprecated API (flash_runtime/legacy.py)
    "remote": "legacy",
    "ServerlessEndpoint": "legacy",
    "CpuServerlessEndpoint": "legacy",
    "LoadBalancerSlsResource": "legacy",
    "CpuLoadBalancerSlsResource": "legacy",
    "LiveServerless": "legacy",
    "CpuLiveServerless": "legacy",
    "LiveLoadBalancer": "legacy",
    "CpuLiveLoadBalancer": "legacy",
}

__all__ = [
    "CPU_DATACENTERS",
    "DEFAULT_WORKERS_MAX",
    "DEFAULT_WORKERS_MIN",
    "ConfigurationError",
    "CpuInstanceType",
    "CpuLiveLoadBalancer",
    "CpuLiveServerless",
    "CpuLoadBalancerSlsResource",
    "CpuServerlessEndpoint",
    "CudaVersion",
    "DataCenter",
    "Endpoint",
    "EndpointJob",
    "FlashError",
    "GpuGroup",
    "GpuType",
    "LiveLoadBalancer",
    "LiveServerless",
    "LoadBalancerSlsResource",
    "NetworkVolume",
    "PodTemplate",
    "RemoteCallError",
    "ServerlessEndpoint",
    "ServerlessScalerType",
    "ServerlessType",
    "__version__",
    "remote",
]

if TYPE_CHECKING:
    from .calls.jobs import EndpointJob
    from .endpoint import Endpoint
    from .errors import ConfigurationError, FlashError, RemoteCallError
    from .legacy import (
        CpuLiveLoadBalancer,
        CpuLiveServerless,
        CpuLoadBalancerSlsResource,
        CpuServerlessEndpoint,
        LiveLoadBalancer,
        LiveServerless,
        LoadBalancerSlsResource,
        ServerlessEndpoint,
        remote,
    )
    from .resources import (
        CPU_DATACENTERS,
        DEFAULT_WORKERS_MAX,
        DEFAULT_WORKERS_MIN,
        CpuInstanceType,
        CudaVersion,
        DataCenter,
        GpuGroup,
        GpuType,
        NetworkVolume,
        PodTemplate,
        ServerlessScalerType,
        ServerlessType,
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
