"""``flash_manifest.json``: the one typed definition, with load, validate and dump.

The schema is compatible with runpod-flash 1.21's manifest. Keys this schema does not know are
kept on load and written back on dump, at every level (top, resource, function), so a manifest
written by another tool survives a round trip through ours.

Only what serving needs is required: ``resources``, each with its ``functions`` (``name`` and
``module`` each). Everything else has a default or is derived on load: ``version`` 1.0, no
``python_version`` check, ``module_path`` from the first function's module, ``file_path`` from
``module_path``, ``is_load_balanced`` from whether the functions have HTTP routes, and the
``function_registry`` from the resources' functions.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import msgspec

from .errors import ManifestError

MANIFEST_NAME = "flash_manifest.json"
SUPPORTED_VERSIONS = ("1.0",)
# In ``Manifest.extra`` of a manifest converted from another app format (``appmanifest.py``:
# a Runpod SDK 2.0 app's ``runpod_manifest.json``): that format's name. Never written to disk.
CONVERTED_FROM = "converted_from"


class _Node(msgspec.Struct, kw_only=True, dict=True):
    """A manifest object that remembers the keys it does not declare (in ``extra``).

    Dumps write every declared key with a value, defaults included (as runpod-flash does), and
    leave out keys whose value is None.
    """

    @property
    def extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = self.__dict__.setdefault("_extra", {})
        return extra


class FunctionEntry(_Node):
    """One user function (or class) served by a resource."""

    name: str
    module: str
    is_async: bool = False
    is_class: bool = False
    class_methods: list[str] | None = None
    http_method: str | None = None
    http_path: str | None = None
    is_generator: bool = False


class Resource(_Node):
    """One endpoint: what it serves and how Runpod should deploy it."""

    functions: list[FunctionEntry]
    resource_type: str | None = None  # runpod-flash's class name (LiveServerless, ...)
    file_path: str = ""  # default: from module_path
    module_path: str = ""  # default: the first function's module
    is_load_balanced: bool | None = None  # default: whether the functions have HTTP routes
    makes_remote_calls: bool = False
    max_concurrency: int = 1
    imageName: str | None = None
    gpuIds: str | None = None
    instanceIds: list[str] | None = None
    gpuCount: int | None = None
    minCudaVersion: str | None = None
    workersMin: int = 0
    workersMax: int = 1
    idleTimeout: int = 60
    executionTimeoutMs: int = 0
    scalerType: str = "QUEUE_DELAY"
    scalerValue: int = 4
    flashboot: bool = True
    locations: str | None = None
    env: dict[str, str] | None = None
    networkVolumes: list[dict[str, Any]] | None = None  # as runpod-flash 1.21 writes them
    networkVolume: dict[str, Any] | list[dict[str, Any]] | None = None  # older manifests: read
    dependencies: list[str] | None = None
    systemDependencies: list[str] | None = None
    endpointId: str | None = None
    containerDiskInGb: int | None = None  # Endpoint(template=PodTemplate(...)) overrides
    dockerArgs: str | None = None

    @property
    def endpoint_type(self) -> str:
        """``"lb"`` or ``"qb"``, the spelling of ``FLASH_ENDPOINT_TYPE``."""
        return "lb" if self.is_load_balanced else "qb"

    @property
    def is_gpu(self) -> bool:
        return not self.instanceIds

    @property
    def volumes(self) -> list[dict[str, Any]]:
        """The network volumes, from ``networkVolumes`` or the older ``networkVolume``."""
        if self.networkVolumes:
            return list(self.networkVolumes)
        old = self.networkVolume
        return list(old) if isinstance(old, list) else [old] if old else []


class Manifest(_Node):
    """The whole ``flash_manifest.json``."""

    resources: dict[str, Resource]
    version: str = "1.0"
    python_version: str | None = None  # None: any Python (no check at boot)
    generated_at: str | None = None
    project_name: str = ""
    function_registry: dict[str, str] = msgspec.field(default_factory=dict)  # default: derived
    routes: dict[str, dict[str, str]] = msgspec.field(default_factory=dict)
    source_fingerprint: str | None = None
    resources_endpoints: dict[str, str] | None = None
    # Which images the endpoints run on (flash_runtime.pack.images): "official" (Runpod's
    # runpod/flash* images, entered through handler_<resource>.py) or "flash" (ours, published
    # under image_repository).
    image_target: str = "official"
    image_repository: str | None = None

    def resource(self, name: str) -> Resource:
        """The resource called ``name``, or a ManifestError listing the ones there are."""
        try:
            return self.resources[name]
        except KeyError:
            known = ", ".join(sorted(self.resources)) or "none"
            raise ManifestError(
                f"resource {name!r} is not in the manifest (it has: {known}); check "
                "FLASH_RESOURCE_NAME"
            ) from None


_FIELDS: dict[type, frozenset[str]] = {
    cls: frozenset(f.encode_name for f in msgspec.structs.fields(cls))
    for cls in (FunctionEntry, Resource, Manifest)
}


def _attach_extras(node: _Node, raw: dict[str, Any]) -> None:
    known = _FIELDS[type(node)]
    extra = {k: v for k, v in raw.items() if k not in known}
    if extra:
        node.__dict__["_extra"] = extra


def _name_dict_keys(raw: dict[str, Any], err: msgspec.ValidationError) -> str:
    """msgspec writes dict keys in error paths as ``[...]``; find and name the actual key."""
    if "[...]" not in str(err):
        return str(err)
    for f in msgspec.structs.fields(Manifest):
        value = raw.get(f.encode_name)
        if not isinstance(value, dict) or not str(err).split("- at `", 1)[-1].startswith(
            f"$.{f.encode_name}["
        ):
            continue
        item_type = getattr(f.type, "__args__", (None, None))[-1]
        for key, item in value.items():
            try:
                msgspec.convert(item, item_type)
            except msgspec.ValidationError as item_err:
                return str(item_err).replace("`$", f"`$.{f.encode_name}.{key}", 1)
    return str(err)


def from_builtins(raw: Any, source: str = "manifest") -> Manifest:
    """Validate a decoded JSON object as a manifest."""
    if not isinstance(raw, dict):
        raise ManifestError(f"{source}: expected a JSON object at `$`, got {type(raw).__name__}")
    try:
        manifest = msgspec.convert(raw, Manifest)
    except msgspec.ValidationError as err:
        raise ManifestError(f"{source}: {_name_dict_keys(raw, err)}") from None
    _attach_extras(manifest, raw)
    for name, resource in manifest.resources.items():
        raw_resource = raw["resources"][name]
        _attach_extras(resource, raw_resource)
        for fn, raw_fn in zip(resource.functions, raw_resource["functions"], strict=True):
            _attach_extras(fn, raw_fn)
        _derive(resource)
    if not manifest.function_registry:
        manifest.function_registry = {
            fn.name: name
            for name, resource in manifest.resources.items()
            for fn in resource.functions
        }
    validate(manifest, source)
    return manifest


def _derive(resource: Resource) -> None:
    """Fill in what a minimal manifest leaves out (see the module's docstring)."""
    if resource.is_load_balanced is None:
        resource.is_load_balanced = any(fn.http_method for fn in resource.functions)
    if not resource.module_path and resource.functions:
        resource.module_path = resource.functions[0].module
    if not resource.file_path and resource.module_path:
        resource.file_path = resource.module_path.replace(".", "/") + ".py"


def loads(data: bytes | str, source: str = "manifest") -> Manifest:
    """Parse and validate manifest JSON."""
    try:
        raw = msgspec.json.decode(data)
    except msgspec.DecodeError as err:
        raise ManifestError(f"{source}: not valid JSON ({err})") from None
    return from_builtins(raw, source)


def load(path: str | Path) -> Manifest:
    """Read and validate a manifest file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(
            f"{path}: no manifest here; build the project with `flash build` first"
        ) from None
    except OSError as err:
        raise ManifestError(f"{path}: cannot read the manifest ({err.strerror})") from None
    return loads(data, str(path))


def to_builtins(manifest: Manifest) -> dict[str, Any]:
    """The manifest as plain JSON-able data, unknown keys included."""

    def merge(node: _Node) -> dict[str, Any]:
        out: dict[str, Any] = dict(node.extra)
        out.update((k, v) for k, v in msgspec.to_builtins(node).items() if v is not None)
        return out

    out = merge(manifest)
    out["resources"] = {}
    for name, resource in manifest.resources.items():
        res = merge(resource)
        res["functions"] = [merge(fn) for fn in resource.functions]
        out["resources"][name] = res
    return out


def dumps(manifest: Manifest) -> bytes:
    """Manifest JSON, indented and with sorted resources, as the packer writes it."""
    import orjson

    return orjson.dumps(to_builtins(manifest), option=orjson.OPT_INDENT_2) + b"\n"


def dump(manifest: Manifest, path: str | Path) -> None:
    """Write a manifest file."""
    Path(path).write_bytes(dumps(manifest))


def validate(manifest: Manifest, source: str = "manifest") -> None:
    """Check the cross-references a typed decode cannot: registry, routes, LB functions."""
    problems: list[str] = []
    if manifest.version not in SUPPORTED_VERSIONS:
        problems.append(
            f"`$.version` is {manifest.version!r}; this runtime reads versions "
            f"{', '.join(SUPPORTED_VERSIONS)}"
        )
    for fn_name, resource_name in manifest.function_registry.items():
        if resource_name not in manifest.resources:
            problems.append(
                f"`$.function_registry.{fn_name}` names resource {resource_name!r}, "
                "which `$.resources` does not have"
            )
    for resource_name, routes in manifest.routes.items():
        resource = manifest.resources.get(resource_name)
        if resource is None:
            problems.append(f"`$.routes.{resource_name}` names a resource that does not exist")
            continue
        names = {f.name for f in resource.functions}
        for key, fn_name in routes.items():
            method, _, path = key.partition(" ")
            if not path.startswith("/") or not method.isupper():
                problems.append(f"`$.routes.{resource_name}` key {key!r} is not 'METHOD /path'")
            if fn_name not in names:
                problems.append(
                    f"`$.routes.{resource_name}.{key}` names function {fn_name!r}, which the "
                    "resource does not have"
                )
    for resource_name, resource in manifest.resources.items():
        if not resource.functions:
            problems.append(f"`$.resources.{resource_name}.functions` is empty")
        if resource.workersMin > resource.workersMax:
            problems.append(
                f"`$.resources.{resource_name}`: workersMin {resource.workersMin} exceeds "
                f"workersMax {resource.workersMax}"
            )
        for i, fn in enumerate(resource.functions):
            if resource.is_load_balanced and not (fn.http_method and fn.http_path):
                problems.append(
                    f"`$.resources.{resource_name}.functions[{i}]` ({fn.name}) is in a "
                    "load-balanced resource but has no http_method/http_path"
                )
    if problems:
        raise ManifestError(f"{source}: invalid manifest: " + "; ".join(problems))


def interpreter_version() -> str:
    """This interpreter's ``major.minor``, as manifests spell ``python_version``."""
    return f"{sys.version_info.major}.{sys.version_info.minor}"
