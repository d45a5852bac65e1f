"""What the development server serves: the released build and its endpoints (plain records).

Shared by the session (which replaces the snapshot on every release) and the HTTP app (which
reads it), so that neither imports the other.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..manifest import Manifest


@dataclass(frozen=True)
class LiveEndpoint:
    """One endpoint of the app as the development server fronts it."""

    resource: str  # the name in Endpoint(name=...): the first segment of its paths here
    name: str  # the deployed endpoint's name (live-...)
    id: str
    type: str  # "qb" | "lb"
    url: str  # where the platform serves it
    routes: tuple[str, ...]  # load-balanced: "POST /process", ...
    function: str  # queue-based: the function it runs

    def paths(self) -> list[str]:
        """``METHOD /path`` on the development server."""
        if self.type == "qb":
            base = f"/{self.resource}"
            return [f"POST {base}/run", f"POST {base}/runsync", f"GET {base}/status/{{job_id}}"]
        out = []
        for route in self.routes:
            method, _, path = route.partition(" ")
            out.append(f"{method} /{self.resource}{path}")
        return out


@dataclass(frozen=True)
class Alias:
    """A path runpod-flash's ``flash dev`` serves, and where it goes here.

    runpod-flash prefixes every path with the endpoint's file, less ``.py`` (``gpu_worker.py``
    -> ``/gpu_worker``; ``longruns/stage1.py`` -> ``/longruns/stage1``): a queue-based function
    is ``POST {prefix}/runsync`` when it is the file's only queue-based callable, else
    ``POST {prefix}/{function or method}/runsync``; a route is ``{prefix}{path}``.
    """

    resource: str
    rest: str  # the path under the endpoint's own /NAME/ ("runsync", or the route's path)
    method: str | None = None  # a class endpoint's method, added to the job input


@dataclass
class Aliases:
    """The reference's paths of one build (see :class:`Alias`)."""

    exact: dict[str, Alias] = field(default_factory=dict)  # queue-based: full path -> alias
    # load-balanced: (method, full path as written, its pattern, resource, the file's prefix)
    routes: list[tuple[str, str, re.Pattern[str], str, str]] = field(default_factory=list)

    def find(self, method: str, path: str) -> Alias | None:
        found = self.exact.get(path)
        if found is not None:
            return found
        for verb, _, pattern, resource, prefix in self.routes:
            if verb == method and pattern.fullmatch(path):
                return Alias(resource, path[len(prefix) :].lstrip("/"))
        return None

    def listing(self) -> list[str]:
        out = [f"POST {path}" for path in self.exact if path.endswith("/runsync")]
        out += [f"{verb} {shown}" for verb, shown, _, _, _ in self.routes]
        return out


def reference_aliases(manifest: Manifest, endpoints: dict[str, LiveEndpoint]) -> Aliases:
    """The paths runpod-flash's dev server would serve for this build that are not ours."""
    aliases = Aliases()
    by_file: dict[str, list[str]] = {}
    for name, resource in manifest.resources.items():
        if name in endpoints and resource.file_path:
            by_file.setdefault(resource.file_path, []).append(name)
    for file_path, names in by_file.items():
        prefix = "/" + file_path.removesuffix(".py")
        if prefix.lstrip("/") in endpoints:
            continue  # an endpoint has that name: its own paths win
        callables: list[tuple[str, str, str | None]] = []  # (resource, label, method)
        for name in names:
            resource = manifest.resources[name]
            if resource.is_load_balanced:
                for fn in resource.functions:
                    route = re.sub(r"\\\{[^}/]+\\\}", "[^/]+", re.escape(fn.http_path or "/"))
                    full = re.compile(re.escape(prefix) + route)
                    shown = prefix + (fn.http_path or "/")
                    aliases.routes.append((fn.http_method or "POST", shown, full, name, prefix))
                continue
            for fn in resource.functions:
                if fn.is_class:
                    callables += [(name, m, m) for m in fn.class_methods or []]
                else:
                    callables.append((name, fn.name, None))
        for name, label, method in callables:
            base = prefix if len(callables) == 1 else f"{prefix}/{label}"
            for rest in ("run", "runsync"):
                aliases.exact[f"{base}/{rest}"] = Alias(name, rest, method)
    return aliases


@dataclass(frozen=True)
class Snapshot:
    """What is being served: one released build."""

    build_id: str
    manifest: Manifest
    endpoints: dict[str, LiveEndpoint]
    fingerprint: str | None

    @cached_property
    def aliases(self) -> Aliases:
        """runpod-flash's paths for this build (``/{file}/runsync``, ``/{file}/{route}``)."""
        return reference_aliases(self.manifest, self.endpoints)
