"""Loading a resource's user code: the manifest says which modules; only those are imported."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .. import manifest as manifest_mod
from ..errors import ManifestError, describe
from ..manifest import FunctionEntry, Manifest, Resource
from .arguments import ArgSpec
from .config import WorkerConfig

Kind = Literal["async", "sync", "gen", "agen"]


def kind_of(func: Callable[..., Any]) -> Kind:
    """How a callable must be driven: awaited, run in a thread, or iterated."""
    if inspect.isasyncgenfunction(func):
        return "agen"
    if inspect.isgeneratorfunction(func):
        return "gen"
    if inspect.iscoroutinefunction(func):
        return "async"
    return "sync"


@dataclass
class Callee:
    """One thing a request can invoke: a function, or a method of a class endpoint's instance."""

    name: str
    func: Callable[..., Any]
    kind: Kind
    args: ArgSpec
    # A 2.0 app's route method: called with the whole JSON body (or nothing), not its fields.
    whole_body: bool = False


@dataclass
class LoadedFunction:
    """A manifest function entry, imported and ready to call."""

    entry: FunctionEntry
    target: Any  # the user's function, or the class of a class endpoint
    callee: Callee | None = None  # set for functions
    instance: Any = None  # set for classes (created once)
    methods: dict[str, Callee] = field(default_factory=dict)  # set for classes

    def method(self, name: str | None) -> Callee:
        """The method ``name`` of a class endpoint (default: its only public method)."""
        if name is None:
            if len(self.methods) == 1:
                return next(iter(self.methods.values()))
            raise LookupError(
                f"{self.entry.name} has several methods ({', '.join(sorted(self.methods))}); "
                'say which with "method" in the input'
            )
        try:
            return self.methods[name]
        except KeyError:
            raise LookupError(
                f"{self.entry.name} has no public method {name!r}; it has: "
                f"{', '.join(sorted(self.methods))}"
            ) from None


@dataclass
class LoadedResource:
    """The resource this worker serves, with its user code imported."""

    name: str
    manifest: Manifest
    resource: Resource
    app_dir: Path
    functions: list[LoadedFunction]
    import_seconds: float = 0.0
    # Set by the 2.0 front end (``apps.py``): the routes of an api class (instead of the
    # functions' own), the user's ASGI app of an api factory (instead of our router), and what
    # runs on the serving event loop before it is ready and after it stops.
    routes: list[tuple[str, str, Callee]] | None = None
    asgi: Any = None
    startup: Callable[[], Coroutine[Any, Any, Any]] | None = None
    shutdown: Callable[[], Coroutine[Any, Any, Any]] | None = None

    @property
    def endpoint_type(self) -> str:
        return self.resource.endpoint_type


def read_manifest(app_dir: Path) -> Manifest:
    """The app's manifest, checked against this interpreter's Python version."""
    manifest = manifest_mod.load(app_dir / manifest_mod.MANIFEST_NAME)
    here = manifest_mod.interpreter_version()
    if manifest.python_version is not None and manifest.python_version != here:
        raise ManifestError(
            f"the artifact was built for Python {manifest.python_version} but this worker runs "
            f"Python {here}; rebuild with `flash build --python-version {here}` or use the "
            f"py{manifest.python_version} worker image"
        )
    return manifest


def choose_resource(manifest: Manifest, config: WorkerConfig) -> str:
    """The resource this worker serves: FLASH_RESOURCE_NAME, or the manifest's only one."""
    if config.resource_name:
        manifest.resource(config.resource_name)  # raises a clear error if unknown
        return config.resource_name
    if len(manifest.resources) == 1:
        return next(iter(manifest.resources))
    raise ManifestError(
        "FLASH_RESOURCE_NAME is not set and the manifest has several resources "
        f"({', '.join(sorted(manifest.resources))}); set it to the one this worker serves"
    )


def _public_methods(cls: type) -> dict[str, Callable[..., Any]]:
    return {
        name: member
        for name, member in inspect.getmembers(cls, inspect.isfunction)
        if not name.startswith("_")
    }


def load_resource(app_dir: Path, manifest: Manifest, name: str) -> LoadedResource:
    """Import the resource's modules and resolve its functions.

    Class endpoints are instantiated here, once, so their set-up runs before the worker is ready.
    """
    from ..endpoint import unwrap

    resource = manifest.resource(name)
    # The SDK decides local-versus-remote calls from this; a worker picked by default (the
    # manifest's only resource) must say so too.
    os.environ["FLASH_RESOURCE_NAME"] = name
    root = str(app_dir)
    if root not in sys.path:
        sys.path.insert(0, root)
    started = time.perf_counter()
    loaded: list[LoadedFunction] = []
    for entry in resource.functions:
        try:
            module = importlib.import_module(entry.module)
        except ManifestError:
            raise
        except Exception as err:
            raise ManifestError(
                f"importing module {entry.module!r} of resource {name!r} failed: "
                f"{type(err).__name__}: {describe(err)}"
            ) from err
        try:
            target = unwrap(getattr(module, entry.name))
        except AttributeError:
            raise ManifestError(
                f"module {entry.module!r} has no {entry.name!r}, which the manifest lists for "
                f"resource {name!r}; rebuild the artifact with `flash build`"
            ) from None
        if entry.is_class or inspect.isclass(target):
            instance = target()
            methods = {
                method_name: Callee(
                    f"{entry.name}.{method_name}",
                    getattr(instance, method_name),
                    kind_of(func),
                    ArgSpec(func, skip_first=True),
                )
                for method_name, func in _public_methods(target).items()
            }
            loaded.append(LoadedFunction(entry, target, instance=instance, methods=methods))
        else:
            callee = Callee(entry.name, target, kind_of(target), ArgSpec(target))
            loaded.append(LoadedFunction(entry, target, callee=callee))
    if resource.makes_remote_calls:
        # Load the cross-endpoint client (aiohttp) while the worker boots, not on its first
        # call to another endpoint; workers that call none never load it.
        importlib.import_module("flash_runtime.calls.client")
    return LoadedResource(name, manifest, resource, app_dir, loaded, time.perf_counter() - started)
