"""runpod-flash's older API: ``@remote(resource_config=LiveServerless(...))``.

runpod-flash 1.21 still exports it (deprecated in favour of ``Endpoint``, with a
``DeprecationWarning``, as here). Each resource configuration object becomes one
:class:`~flash_runtime.endpoint.Endpoint` with the same settings, and ``@remote`` registers the
function, class or route on it, so discovery, the manifest, the workers and calls treat the two
spellings alike. The classes differ as runpod-flash's do: ``Cpu*`` run on CPU instances
(default ``cpu3g-2-8``), ``*LoadBalancer*`` are load-balanced (``@remote`` then needs ``method``
and ``path``), ``Live*`` are the names runpod-flash uses while developing; here a ``Live*`` and
its plain twin behave the same.

Fields are runpod-flash's (camelCase). Those Runpod assigns (ids, timestamps, ...) and those
that would change nothing here are refused with a clear error rather than silently dropped.
"""

from __future__ import annotations

import inspect
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from .endpoint import DefinedAt, Endpoint
from .errors import ConfigurationError
from .resources import CpuInstanceType, PodTemplate

# runpod-flash field -> Endpoint argument
_FIELDS = {
    "gpus": "gpu",
    "gpuCount": "gpu_count",
    "instanceIds": "cpu",
    "idleTimeout": "idle_timeout",
    "env": "env",
    "executionTimeoutMs": "execution_timeout_ms",
    "flashboot": "flashboot",
    "imageName": "image",
    "scalerType": "scaler_type",
    "scalerValue": "scaler_value",
    "datacenter": "datacenter",
    "minCudaVersion": "min_cuda_version",
    "template": "template",
}
_OTHER_FIELDS = frozenset(
    {"name", "workersMin", "workersMax", "locations", "networkVolume", "networkVolumes"}
)


class ServerlessResource:
    """A queue-based GPU endpoint's configuration (runpod-flash's base class)."""

    cpu = False
    load_balanced = False

    def __init__(self, *, name: str, **fields: Any) -> None:
        frame = sys._getframe(1)
        self.defined_at = DefinedAt(frame.f_code.co_filename, frame.f_lineno)
        unknown = sorted(set(fields) - set(_FIELDS) - _OTHER_FIELDS)
        if unknown:
            raise ConfigurationError(
                f"{type(self).__name__}(name={name!r}) at {self.defined_at}: "
                f"{', '.join(unknown)} cannot be set here (Runpod assigns them, or flash_runtime "
                "does not apply them); see docs/reference/endpoint.md"
            )
        self.name = name
        self.fields = fields
        self._endpoint: Endpoint | None = None

    def endpoint(self) -> Endpoint:
        """The Endpoint these settings describe (one per configuration object)."""
        if self._endpoint is None:
            self._endpoint = Endpoint(self.name, **self._arguments())
            self._endpoint.defined_at = self.defined_at
        return self._endpoint

    def _arguments(self) -> dict[str, Any]:
        f = self.fields
        args = {_FIELDS[k]: v for k, v in f.items() if k in _FIELDS and v is not None}
        if self.cpu:
            args.pop("gpu", None)
            args.pop("gpu_count", None)
            args.pop("min_cuda_version", None)
            args.setdefault("cpu", [CpuInstanceType.CPU3G_2_8])
        elif "cpu" in args:
            raise ConfigurationError(
                f"{type(self).__name__}(name={self.name!r}) at {self.defined_at}: instanceIds "
                f"is for CPU endpoints; use Cpu{type(self).__name__}"
            )
        low, high = f.get("workersMin", 0), f.get("workersMax", 1)
        args["workers"] = (low, high)
        if f.get("locations"):
            args["datacenter"] = [d.strip() for d in str(f["locations"]).split(",") if d.strip()]
        volumes = [v for v in (f.get("networkVolume"), *(f.get("networkVolumes") or [])) if v]
        if volumes:
            args["volume"] = volumes
        if isinstance(args.get("template"), dict):
            args["template"] = PodTemplate(**args["template"])
        return args

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class ServerlessEndpoint(ServerlessResource):
    """A queue-based GPU endpoint."""


class CpuServerlessEndpoint(ServerlessEndpoint):
    """A queue-based CPU endpoint."""

    cpu = True


class LoadBalancerSlsResource(ServerlessResource):
    """A load-balanced GPU endpoint: ``@remote(..., method=..., path=...)`` adds its routes."""

    load_balanced = True


class CpuLoadBalancerSlsResource(LoadBalancerSlsResource):
    """A load-balanced CPU endpoint."""

    cpu = True


class LiveServerless(ServerlessEndpoint):
    """runpod-flash's development twin of :class:`ServerlessEndpoint`; the same here."""


class CpuLiveServerless(CpuServerlessEndpoint):
    """runpod-flash's development twin of :class:`CpuServerlessEndpoint`; the same here."""


class LiveLoadBalancer(LoadBalancerSlsResource):
    """runpod-flash's development twin of :class:`LoadBalancerSlsResource`; the same here."""


class CpuLiveLoadBalancer(CpuLoadBalancerSlsResource):
    """runpod-flash's development twin of :class:`CpuLoadBalancerSlsResource`; the same here."""


def remote(
    resource_config: ServerlessResource,
    dependencies: Sequence[str] | None = None,
    system_dependencies: Sequence[str] | None = None,
    accelerate_downloads: bool = True,
    local: bool = False,
    method: str | None = None,
    path: str | None = None,
) -> Callable[[Any], Any]:
    """Deprecated (as in runpod-flash): run the decorated function or class on the endpoint
    ``resource_config`` describes; prefer ``Endpoint``.

    ``local=True`` returns the function itself (it always runs in the calling process and is
    not an endpoint's). A load-balanced resource needs ``method`` and ``path``: each
    ``@remote`` adds one route to that resource's endpoint.
    """
    warnings.warn(
        "runpod_flash.remote is deprecated; use runpod_flash.Endpoint instead",
        DeprecationWarning,
        stacklevel=2,
    )
    if not isinstance(resource_config, ServerlessResource):
        raise ConfigurationError(
            "remote(resource_config=...) takes a resource configuration such as "
            f"LiveServerless(name='worker'), not {type(resource_config).__name__}"
        )
    del accelerate_downloads  # runpod-flash's image download acceleration: nothing to do here

    def decorate(target: Any) -> Any:
        if local:
            return target
        endpoint = resource_config.endpoint()
        for arg, values in (("dependencies", dependencies), ("system", system_dependencies)):
            if values:
                _add(endpoint, arg, values)
        where = _where(target)
        if resource_config.load_balanced:
            if not method or not path:
                raise ConfigurationError(
                    f"{resource_config!r} is load-balanced: give @remote(..., method='POST', "
                    "path='/route')"
                )
            return endpoint._route(method, path, where)(target)
        if method or path:
            raise ConfigurationError(
                f"{resource_config!r} is queue-based: method and path are for load-balanced "
                "resources (LoadBalancerSlsResource, LiveLoadBalancer, ...)"
            )
        decorated = endpoint(target)
        endpoint.target_defined_at = where  # the user's definition, not this module
        return decorated

    return decorate


def _where(target: Any) -> DefinedAt:
    """Where the user defined ``target``, for the messages that name it."""
    try:
        file = inspect.getsourcefile(target) or "<unknown>"
        line = inspect.getsourcelines(target)[1]
    except (OSError, TypeError):
        return DefinedAt("<unknown>", 0)
    return DefinedAt(file, line)


def _add(endpoint: Endpoint, which: str, values: Sequence[str]) -> None:
    """Add ``@remote``'s dependencies to the endpoint's (several routes may each bring some)."""
    if isinstance(values, str) or not all(isinstance(v, str) and v.strip() for v in values):
        raise ConfigurationError(f"remote({which}=...) must be a list of strings")
    if which == "dependencies":
        endpoint.dependencies = tuple(dict.fromkeys([*endpoint.dependencies, *values]))
    else:
        endpoint.system_dependencies = tuple(
            dict.fromkeys([*endpoint.system_dependencies, *values])
        )
