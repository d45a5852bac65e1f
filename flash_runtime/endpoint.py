"""``Endpoint``: the decorator users put on the functions they want to run on Runpod.

An ``Endpoint`` is one serverless endpoint. Used directly as a decorator it makes a queue-based
endpoint around one function or class; its ``get``/``post``/``put``/``delete``/``patch`` methods
register routes of a load-balanced endpoint. Configuration errors are raised here, at decoration
time, so ``flash build`` and plain ``import`` report them with the user's file and line.

This module is imported by user code inside every worker, so it imports nothing heavy.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import sys
from collections.abc import Callable, Coroutine, Generator, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ParamSpec, Protocol, TypeVar, overload

from .errors import ConfigurationError
from .resources import (
    CpuInstanceType,
    CudaVersion,
    DataCenter,
    GpuGroup,
    GpuType,
    NetworkVolume,
    PodTemplate,
    ScalerType,
    gpu_ids,
)

if TYPE_CHECKING:
    from .calls.jobs import EndpointJob

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound=type)


class RouteDecorator(Protocol):
    """What ``@api.post(path)`` and friends return. A decorated ``async def`` keeps its type; a
    plain ``def`` keeps its parameters and returns ``Any``: called from another endpoint (or a
    script) it returns an awaitable, from its own endpoint its value. On an ``Endpoint(id=...)``
    client the same methods return the awaitable call of that route instead (``__await__``)."""

    def __await__(self) -> Generator[Any, None, Any]: ...

    @overload
    def __call__(
        self, func: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, func: Callable[P, R]) -> Callable[P, Any]: ...


RESERVED_PATHS = frozenset({"/ping", "/execute"})
HTTP_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_PATH_RE = re.compile(r"^/[A-Za-z0-9_.~\-/{}]*$")

# Attribute set on every decorated function or class, pointing at its Endpoint.
ENDPOINT_ATTR = "__flash_endpoint__"


@dataclass(frozen=True)
class DefinedAt:
    """Where in the user's source something was declared, for error messages."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class RouteDeclaration:
    """One HTTP route of a load-balanced endpoint."""

    method: str
    path: str
    func: Callable[..., Any]
    defined_at: DefinedAt

    @property
    def key(self) -> str:
        """The manifest's spelling: ``"POST /generate"``."""
        return f"{self.method} {self.path}"


def _caller(depth: int) -> DefinedAt:
    frame = sys._getframe(depth + 1)
    return DefinedAt(frame.f_code.co_filename, frame.f_lineno)


@dataclass
class _Registry:
    """Every endpoint that has a function, class or route attached, in declaration order."""

    endpoints: list[Endpoint] = field(default_factory=list)

    def add(self, endpoint: Endpoint) -> None:
        if not any(e is endpoint for e in self.endpoints):
            self.endpoints.append(endpoint)


REGISTRY = _Registry()


def registered_endpoints() -> list[Endpoint]:
    """The endpoints declared so far in this process (used by discovery and the worker)."""
    return list(REGISTRY.endpoints)


def current_resource() -> str | None:
    """The resource this process serves as a worker, or None outside a worker."""
    return os.environ.get("FLASH_RESOURCE_NAME") or None


# The endpoint whose code runs in this process outside a worker (FLASH_CALLS=local): a call of
# that endpoint's functions from it keeps its native kind; any other call returns an awaitable.
_running_endpoint: ContextVar[str | None] = ContextVar("flash_running_endpoint", default=None)


def calls_remote() -> bool:
    """Outside a worker, whether calls go to the deployed app: yes by default (as in
    runpod-flash: ``python gpu_worker.py`` runs the function on a worker), and with
    ``FLASH_CALLS=remote``; ``FLASH_CALLS=local`` runs them in this process (unit tests,
    debugging)."""
    value = os.environ.get("FLASH_CALLS")
    if not value:
        return True
    mode = value.strip().lower()
    if mode not in ("local", "remote"):
        raise ConfigurationError(
            f"FLASH_CALLS={value!r} must be 'local' (run decorated functions in this process) or "
            "'remote' (call the deployed app)"
        )
    return mode == "remote"


class Endpoint:
    """One Runpod serverless endpoint and its configuration.

    >>> @Endpoint(name="embed", gpu=GpuGroup.ADA_24, workers=3)
    ... async def embed(text: str) -> list[float]: ...

    >>> api = Endpoint(name="api", cpu="cpu5c-4-8", workers=(1, 5))
    >>> @api.post("/generate")
    ... def generate(prompt: str) -> dict: ...

    ``gpu`` and ``cpu`` are exclusive (neither means any GPU); ``workers=n`` means 0 to n
    workers, a tuple is ``(min, max)``. See the project README for every argument.
    """

    def __init__(
        self,
        name: str | None = None,
        *,
        id: str | None = None,
        gpu: GpuType | GpuGroup | str | Sequence[GpuType | GpuGroup | str] | None = None,
        cpu: CpuInstanceType | str | Sequence[CpuInstanceType | str] | None = None,
        workers: int | tuple[int, int] | None = None,
        idle_timeout: int = 60,
        dependencies: Sequence[str] | None = None,
        system_dependencies: Sequence[str] | None = None,
        accelerate_downloads: bool = True,
        volume: NetworkVolume | Sequence[NetworkVolume] | None = None,
        datacenter: DataCenter | str | Sequence[DataCenter | str] | None = None,
        env: dict[str, str] | None = None,
        gpu_count: int = 1,
        execution_timeout_ms: int = 0,
        flashboot: bool = True,
        image: str | None = None,
        scaler_type: ScalerType | str | None = None,
        scaler_value: int = 4,
        template: PodTemplate | None = None,
        min_cuda_version: CudaVersion | str | None = None,
        max_concurrency: int = 1,
    ) -> None:
        self.defined_at = _caller(1)
        label = name or id or "<unnamed>"
        self._label = label
        if name is None and id is None:
            self._fail("give it a name, e.g. Endpoint(name='my-worker', ...)")
        if name is not None and (not isinstance(name, str) or not _NAME_RE.match(name)):
            self._fail(
                f"name {name!r} is not valid; use 1-64 letters, digits, '-', '_' or '.', "
                "starting with a letter or digit"
            )
        self.name: str = name or str(id)
        self.id = id
        if gpu is not None and cpu is not None:
            self._fail(
                "gpu and cpu are exclusive; pass gpu=... for a GPU worker or cpu=... for a CPU worker"
            )
        self.cpu: tuple[CpuInstanceType, ...] = (
            tuple(self._enum_list(CpuInstanceType, cpu, "cpu")) if cpu is not None else ()
        )
        self.gpu: tuple[GpuType | GpuGroup, ...] = (
            () if self.cpu else tuple(self._gpu_list(gpu if gpu is not None else GpuGroup.ANY))
        )
        self.workers: tuple[int, int] = self._workers(workers)
        self.idle_timeout = self._non_negative_int(idle_timeout, "idle_timeout")
        self.dependencies: tuple[str, ...] = self._strings(dependencies, "dependencies")
        self.system_dependencies: tuple[str, ...] = self._strings(
            system_dependencies, "system_dependencies"
        )
        if volume is None:
            self.volumes: tuple[NetworkVolume, ...] = ()
        else:
            vols = [volume] if isinstance(volume, NetworkVolume) else list(volume)
            if not all(isinstance(v, NetworkVolume) for v in vols):
                self._fail("volume must be a NetworkVolume(...) or a list of them")
            self.volumes = tuple(vols)
        self.datacenters: tuple[DataCenter, ...] = (
            tuple(self._enum_list(DataCenter, datacenter, "datacenter")) if datacenter else ()
        )
        if env is not None and not (
            isinstance(env, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
        ):
            self._fail("env must be a dict of str to str, e.g. env={'HF_HOME': '/runpod-volume'}")
        self.env: dict[str, str] = dict(env or {})
        self.gpu_count = self._positive_int(gpu_count, "gpu_count")
        self.execution_timeout_ms = self._non_negative_int(
            execution_timeout_ms, "execution_timeout_ms"
        )
        self.flashboot = bool(flashboot)
        if image is not None and (not isinstance(image, str) or not image.strip()):
            self._fail(
                "image must be a non-empty image reference such as 'runpod/flash:py3.12-latest'"
            )
        if template is not None and not isinstance(template, PodTemplate):
            self._fail("template must be a PodTemplate(...)")
        self.template = template
        if template is not None and template.imageName:
            if image is not None and image != template.imageName:
                self._fail("image and template.imageName differ; give the image once")
            image = template.imageName
        if template is not None:
            self.env.update(template.env)
        # runpod-flash's flag for its images' download acceleration; accepted, nothing to do.
        self.accelerate_downloads = bool(accelerate_downloads)
        self.image = image
        self._scaler_type: ScalerType | None = (
            self._enum_list(ScalerType, scaler_type, "scaler_type")[0] if scaler_type else None
        )
        self.scaler_value = self._positive_int(scaler_value, "scaler_value")
        self.min_cuda_version: CudaVersion | None = (
            self._enum_list(CudaVersion, min_cuda_version, "min_cuda_version")[0]
            if min_cuda_version is not None
            else None
        )
        self.max_concurrency = self._positive_int(max_concurrency, "max_concurrency")
        self.target: Callable[..., Any] | type | None = None
        self.target_defined_at: DefinedAt | None = None
        self.routes: list[RouteDeclaration] = []

    # -- decoration -------------------------------------------------------------------------

    @overload
    def __call__(self, target: C) -> C: ...

    @overload
    def __call__(
        self, target: Callable[P, Coroutine[Any, Any, R]]
    ) -> Callable[P, Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(self, target: Callable[P, R]) -> Callable[P, Any]: ...

    def __call__(self, target: Any) -> Any:
        """Make ``target`` (a function or a class) this queue-based endpoint's handler."""
        where = _caller(1)
        if self.is_client:
            self._fail(
                "Endpoint(id=...) is a client of an endpoint that is already deployed; it "
                "cannot serve your code. Use Endpoint(name=...) to declare an endpoint",
                where,
            )
        if not callable(target):
            self._fail(
                f"@Endpoint decorates a function or a class, not {type(target).__name__}", where
            )
        if self.routes:
            self._fail(
                "it already has HTTP routes (load-balanced); a queue-based function cannot be "
                "added to it. Give the function its own Endpoint(name=...)",
                where,
            )
        if self.target is not None:
            self._fail(
                f"it already serves {self.target.__name__!r}; a queue-based endpoint runs exactly "
                f"one function. Give {getattr(target, '__name__', target)!r} its own Endpoint(name=...)",
                where,
            )
        self.target = target
        self.target_defined_at = where
        REGISTRY.add(self)
        if inspect.isclass(target):
            setattr(target, ENDPOINT_ATTR, self)
            # Decided at import: the class itself in its own worker; elsewhere a handle whose
            # methods return awaitables (run on the class's workers, or with FLASH_CALLS=local
            # on one instance in this process).
            if current_resource() == self.name:
                return target
            return RemoteClass(self, target)
        return self._wrap(target)

    def route(self, method: str, path: str) -> RouteDecorator:
        """Register ``METHOD path`` on this load-balanced endpoint."""
        return self._route(method, path, _caller(1))

    def _route(self, method: str, path: str, where: DefinedAt) -> RouteDecorator:
        method = method.upper()
        if self.is_client:
            self._fail(
                "Endpoint(id=...) is a client of a deployed endpoint; its routes are called "
                f"(await ep.{method.lower()}(path, data)), not declared",
                where,
            )
        if method not in HTTP_METHODS:
            self._fail(
                f"HTTP method {method!r} is not supported; use one of {', '.join(HTTP_METHODS)}",
                where,
            )
        if not isinstance(path, str) or not _PATH_RE.match(path):
            self._fail(
                f"route path {path!r} must start with '/' and hold only URL path characters", where
            )
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/")
        if path in RESERVED_PATHS:
            self._fail(f"{path} is reserved by the worker runtime; choose another path", where)
        if self.target is not None:
            self._fail(
                f"it is a queue-based endpoint (decorating {self.target.__name__!r}); routes need "
                "their own Endpoint. Use one Endpoint for @ep.get/@ep.post routes and separate "
                "ones for queue-based functions",
                where,
            )
        for existing in self.routes:
            if existing.method == method and existing.path == path:
                self._fail(
                    f"route {method} {path} is declared twice (first at {existing.defined_at}); "
                    "give each route its own method and path",
                    where,
                )

        def register(func: Any) -> Any:
            if not callable(func) or inspect.isclass(func):
                self._fail(f"@{self.name}.{method.lower()}({path!r}) decorates a function", where)
            for existing in self.routes:
                if existing.func.__name__ == func.__name__:
                    self._fail(
                        f"function name {func.__name__!r} serves two routes ({existing.key} and "
                        f"{method} {path}); route functions need distinct names",
                        where,
                    )
            self.routes.append(RouteDeclaration(method, path, func, where))
            REGISTRY.add(self)
            return self._wrap(func)

        return register  # type: ignore[return-value]  # (its __await__ is the client's)

    def get(self, path: str, data: Any = None, **kwargs: Any) -> RouteDecorator:
        """Register a ``GET`` route; arguments come from the query string and path. On an
        ``Endpoint(id=...)`` client: call that route (``await ep.get("/health")``)."""
        return self._route_or_call("GET", path, data, kwargs)

    def post(self, path: str, data: Any = None, **kwargs: Any) -> RouteDecorator:
        """Register a ``POST`` route; arguments are the JSON body's top-level fields. On an
        ``Endpoint(id=...)`` client: call that route with ``data`` as the JSON body."""
        return self._route_or_call("POST", path, data, kwargs)

    def put(self, path: str, data: Any = None, **kwargs: Any) -> RouteDecorator:
        """Register a ``PUT`` route (client: call it)."""
        return self._route_or_call("PUT", path, data, kwargs)

    def delete(self, path: str, data: Any = None, **kwargs: Any) -> RouteDecorator:
        """Register a ``DELETE`` route (client: call it)."""
        return self._route_or_call("DELETE", path, data, kwargs)

    def patch(self, path: str, data: Any = None, **kwargs: Any) -> RouteDecorator:
        """Register a ``PATCH`` route (client: call it)."""
        return self._route_or_call("PATCH", path, data, kwargs)

    def _route_or_call(
        self, method: str, path: str, data: Any, kwargs: dict[str, Any]
    ) -> RouteDecorator:
        if self.is_client:
            from .calls.jobs import ClientCall

            timeout = kwargs.pop("timeout", 60.0)
            if kwargs:
                raise TypeError(f"{method.lower()}() got unexpected arguments {sorted(kwargs)}")
            return ClientCall(str(self.id), method, path, data, timeout)
        if data is not None or kwargs:
            raise TypeError(
                f"data and keyword arguments are for Endpoint(id=...) clients; to declare a "
                f"route use @{self.name}.{method.lower()}({path!r}) alone"
            )
        return self._route(method, path, _caller(2))

    # -- client mode (Endpoint(id=...)) ------------------------------------------------------

    @property
    def is_client(self) -> bool:
        """Whether this is a client of an endpoint deployed elsewhere (``Endpoint(id=...)``)."""
        return self.id is not None

    def _client_id(self, what: str) -> str:
        if self.id is None:
            raise ConfigurationError(
                f"Endpoint {self.name!r}: {what}() is for clients of a deployed endpoint, "
                "Endpoint(id='<endpoint id>'); call your decorated function instead"
            )
        return self.id

    async def run(self, input_data: Any, *, webhook: str | None = None) -> EndpointJob:
        """Submit a job (``POST /run``); ``await job.wait()`` for its output."""
        from .calls.jobs import EndpointJob, _target, queue_url, request

        endpoint_id = self._client_id("run")
        body: dict[str, Any] = {"input": input_data}
        if webhook is not None:
            body["webhook"] = webhook
        url = f"{queue_url(_target(endpoint_id), endpoint_id)}/run"
        return EndpointJob(await request(endpoint_id, "POST", url, body), endpoint_id)

    async def runsync(self, input_data: Any, timeout: float = 60.0) -> EndpointJob:
        """Submit a job and wait for it (``POST /runsync``), at most ``timeout`` seconds on
        the server's side; a job still running then comes back unfinished."""
        from .calls.jobs import EndpointJob, _target, queue_url, request

        endpoint_id = self._client_id("runsync")
        wait_ms = max(1, int(timeout * 1000))
        url = f"{queue_url(_target(endpoint_id), endpoint_id)}/runsync?wait={wait_ms}"
        data = await request(endpoint_id, "POST", url, {"input": input_data}, timeout + 30)
        return EndpointJob(data, endpoint_id)

    async def cancel(self, job_id: str) -> EndpointJob:
        """Cancel a job of this endpoint (``POST /cancel/{id}``)."""
        from .calls.jobs import EndpointJob, _target, queue_url, request

        endpoint_id = self._client_id("cancel")
        url = f"{queue_url(_target(endpoint_id), endpoint_id)}/cancel/{job_id}"
        return EndpointJob(await request(endpoint_id, "POST", url), endpoint_id)

    # -- what it is -------------------------------------------------------------------------

    @property
    def kind(self) -> str | None:
        """``"qb"`` (queue-based), ``"lb"`` (load-balanced), or None while nothing is attached."""
        if self.target is not None:
            return "qb"
        if self.routes:
            return "lb"
        return None

    @property
    def is_gpu(self) -> bool:
        return not self.cpu

    @property
    def scaler_type(self) -> ScalerType:
        if self._scaler_type is not None:
            return self._scaler_type
        return ScalerType.REQUEST_COUNT if self.kind == "lb" else ScalerType.QUEUE_DELAY

    def functions(self) -> list[Callable[..., Any]]:
        """The user callables this endpoint serves (its function or class, or its routes)."""
        if self.target is not None:
            return [self.target]
        return [r.func for r in self.routes]

    def deploy_config(self) -> dict[str, Any]:
        """The Runpod deploy settings of this endpoint, in the manifest's key spelling."""
        cfg: dict[str, Any] = {}
        if self.image:
            cfg["imageName"] = self.image
        if self.cpu:
            cfg["instanceIds"] = [c.value for c in self.cpu]
        else:
            cfg["gpuIds"] = gpu_ids(self.gpu)
            cfg["gpuCount"] = self.gpu_count
            if self.min_cuda_version is not None:
                cfg["minCudaVersion"] = self.min_cuda_version.value
        cfg["workersMin"], cfg["workersMax"] = self.workers
        cfg["idleTimeout"] = self.idle_timeout
        cfg["executionTimeoutMs"] = self.execution_timeout_ms
        cfg["scalerType"] = self.scaler_type.value
        cfg["scalerValue"] = self.scaler_value
        cfg["flashboot"] = self.flashboot
        if self.datacenters:
            cfg["locations"] = ",".join(d.value for d in self.datacenters)
        if self.env:
            cfg["env"] = dict(self.env)
        if self.volumes:
            cfg["networkVolumes"] = [v.to_manifest() for v in self.volumes]
        if self.dependencies:
            cfg["dependencies"] = list(self.dependencies)
        if self.system_dependencies:
            cfg["systemDependencies"] = list(self.system_dependencies)
        if self.id:
            cfg["endpointId"] = self.id
        if self.template is not None and self.template.containerDiskInGb is not None:
            cfg["containerDiskInGb"] = self.template.containerDiskInGb
        if self.template is not None and self.template.dockerArgs:
            cfg["dockerArgs"] = self.template.dockerArgs
        return cfg

    def __repr__(self) -> str:
        return f"Endpoint(name={self.name!r}, kind={self.kind!r})"

    # -- calls ------------------------------------------------------------------------------

    def _runs_here(self) -> bool:
        """Whether a call runs in this process: in a worker, when the worker serves this
        endpoint; elsewhere only with ``FLASH_CALLS=local``."""
        resource = current_resource()
        if resource is not None:
            return resource == self.name
        return not calls_remote()

    def _wrap(self, func: Callable[..., Any]) -> Callable[..., Any]:
        """The decorated function. A call made from this endpoint's own code (its worker, or
        its function running here with ``FLASH_CALLS=local``) is the function's own kind of
        call; any other call returns an awaitable, remote or local, so that ``await f(x)``
        works for a plain ``def`` wherever the caller runs."""
        endpoint = self
        wrapper: Callable[..., Any]
        if inspect.iscoroutinefunction(func):

            async def call_async(*args: Any, **kwargs: Any) -> Any:
                if not endpoint._runs_here():
                    return await endpoint._remote(func, args, kwargs)
                if current_resource() is not None or _running_endpoint.get() == endpoint.name:
                    return await func(*args, **kwargs)
                token = _running_endpoint.set(endpoint.name)
                try:
                    return await func(*args, **kwargs)
                finally:
                    _running_endpoint.reset(token)

            wrapper = call_async
        else:

            def call(*args: Any, **kwargs: Any) -> Any:
                if not endpoint._runs_here():
                    return endpoint._remote(func, args, kwargs)
                if current_resource() is not None or _running_endpoint.get() == endpoint.name:
                    return func(*args, **kwargs)
                return endpoint._local(func, args, kwargs)

            wrapper = call
        functools.update_wrapper(wrapper, func)
        setattr(wrapper, ENDPOINT_ATTR, self)
        return wrapper

    async def _local(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        """A plain function of this endpoint called from elsewhere with ``FLASH_CALLS=local``:
        run here when awaited, as this endpoint's code."""
        token = _running_endpoint.set(self.name)
        try:
            return func(*args, **kwargs)
        finally:
            _running_endpoint.reset(token)

    async def _remote(
        self, func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> Any:
        from .calls.client import call  # first remote call: not before (worker cold start)

        return await call(self.name, func, args, kwargs)

    # -- validation helpers -----------------------------------------------------------------

    def _fail(self, what: str, where: DefinedAt | None = None) -> None:
        at = where or self.defined_at
        raise ConfigurationError(f"Endpoint {self._label!r} ({at}): {what}.")

    def _enum_list(self, enum: type[Any], value: Any, arg: str) -> list[Any]:
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if not items:
            self._fail(f"{arg} must not be empty")
        out = []
        for item in items:
            try:
                out.append(enum(item))
            except ValueError:
                allowed = ", ".join(repr(m.value) for m in list(enum.__members__.values())[:6])
                self._fail(
                    f"{arg}={item!r} is not a valid {enum.__name__}; use a {enum.__name__} member "
                    f"or one of its values ({allowed}, ...)"
                )
        return out

    def _gpu_list(self, value: Any) -> list[GpuType | GpuGroup]:
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        if not items:
            self._fail("gpu must not be empty")
        out: list[GpuType | GpuGroup] = []
        for item in items:
            if isinstance(item, (GpuType, GpuGroup)):
                out.append(item)
                continue
            try:
                out.append(GpuGroup(item))
                continue
            except ValueError:
                pass
            try:
                out.append(GpuType(item))
            except ValueError:
                self._fail(
                    f"gpu={item!r} is neither a GpuType nor a GpuGroup; use e.g. "
                    "GpuType.NVIDIA_GEFORCE_RTX_4090, GpuGroup.AMPERE_80 or GpuGroup.ANY"
                )
        return out

    def _workers(self, workers: Any) -> tuple[int, int]:
        if workers is None:
            return (0, 1)
        if _is_int(workers):
            if workers < 1:
                self._fail(f"workers={workers} must be at least 1 (it is the maximum worker count)")
            return (0, int(workers))
        if (
            isinstance(workers, (tuple, list))
            and len(workers) == 2
            and all(_is_int(w) for w in workers)
        ):
            low, high = int(workers[0]), int(workers[1])
            if low < 0 or high < 1 or low > high:
                self._fail(
                    f"workers={tuple(workers)} is not a valid (min, max) range; need "
                    "0 <= min <= max and max >= 1"
                )
            return (low, high)
        self._fail(f"workers={workers!r} must be an int (max) or a (min, max) tuple of ints")
        raise AssertionError  # unreachable: _fail raises

    def _positive_int(self, value: Any, arg: str) -> int:
        if not _is_int(value) or value < 1:
            self._fail(f"{arg}={value!r} must be an integer of at least 1")
        return int(value)

    def _non_negative_int(self, value: Any, arg: str) -> int:
        if not _is_int(value) or value < 0:
            self._fail(f"{arg}={value!r} must be a non-negative integer")
        return int(value)

    def _strings(self, value: Iterable[str] | None, arg: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if isinstance(value, str) or not all(isinstance(v, str) and v.strip() for v in value):
            self._fail(f"{arg} must be a list of strings, e.g. {arg}=['torch']")
        return tuple(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class RemoteClass:
    """A class endpoint seen from outside its own workers: another endpoint's worker, or a
    script.

    The instance lives on the class's own workers (created there once, without arguments), so
    ``Model()`` here makes a handle whose public methods run there and return awaitables:
    ``await Model().predict(x=1)`` sends ``{"input": {"method": "predict", "x": 1}}`` to the
    class's endpoint. With ``FLASH_CALLS=local`` the methods run on one instance of the class
    in this process, created at the first call, and still return awaitables.
    """

    def __init__(self, endpoint: Endpoint, cls: type) -> None:
        functools.update_wrapper(self, cls, updated=())
        setattr(self, ENDPOINT_ATTR, endpoint)
        self.endpoint = endpoint
        self.cls = cls
        self._instance: Any = None

    def __call__(self, *args: Any, **kwargs: Any) -> _RemoteInstance:
        if args or kwargs:
            raise TypeError(
                f"{self.cls.__name__} runs on endpoint {self.endpoint.name!r}, whose workers "
                f"create it once without arguments; call {self.cls.__name__}() with none"
            )
        return _RemoteInstance(self)

    def local_instance(self) -> Any:
        """The one instance ``FLASH_CALLS=local`` calls run on (as a worker has one)."""
        if self._instance is None:
            self._instance = self.cls()
        return self._instance

    def __repr__(self) -> str:
        return f"<remote class {self.cls.__qualname__} on endpoint {self.endpoint.name!r}>"


class _RemoteInstance:
    """``RemoteClass()``: its public methods call the class endpoint."""

    def __init__(self, remote: RemoteClass) -> None:
        self._remote = remote

    def __getattr__(self, name: str) -> Callable[..., Any]:
        remote = self._remote
        cls = remote.cls
        func = inspect.getattr_static(cls, name, None)
        if name.startswith("_") or not inspect.isfunction(func):
            raise AttributeError(f"{cls.__name__} has no public method {name!r}")
        endpoint = remote.endpoint

        async def method(*args: Any, **kwargs: Any) -> Any:
            if endpoint._runs_here():
                token = _running_endpoint.set(endpoint.name)
                try:
                    result = getattr(remote.local_instance(), name)(*args, **kwargs)
                    return await result if inspect.isawaitable(result) else result
                finally:
                    _running_endpoint.reset(token)
            from .calls.client import default_client

            client = default_client()
            return await client.call(endpoint.name, cls.__name__, func, args, kwargs, method=name)

        functools.update_wrapper(method, func)
        return method


def endpoint_of(obj: Any) -> Endpoint | None:
    """The Endpoint a decorated function or class belongs to, if any."""
    return getattr(obj, ENDPOINT_ATTR, None)


def unwrap(obj: Any) -> Any:
    """The user's original function behind a decorated one (classes are returned as they are)."""
    return obj if inspect.isclass(obj) else inspect.unwrap(obj)
