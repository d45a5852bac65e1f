"""From discovered endpoints to a validated :class:`~flash_runtime.manifest.Manifest`.

The project-level rules the SDK cannot check while one module is being imported are checked
here, each problem with the file:line of the declarations involved: at least one endpoint, unique
endpoint names (one function per queue-based name), function names unique across the project
(the function registry and cross-endpoint calls find functions by name), and routes of one
endpoint that would match the same requests.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import manifest as manifest_mod
from .discover import Discovered, Function, module_name
from .errors import BuildError
from .images import ImageTarget, resource_type

_PARAM = re.compile(r"\{[^/]*\}")


def validate(endpoints: list[Discovered], *, project_dir: Path, scanned: int) -> None:
    """Raise BuildError listing every project-level problem, or none when all is well."""
    if not endpoints:
        raise BuildError(
            f"No endpoints found in {project_dir} ({scanned} Python "
            f"file{'s' if scanned != 1 else ''} shipped). Decorate a function with "
            "@Endpoint(name=..., ...) or attach routes with @api.get/post(...) to an "
            "api = Endpoint(...); check that your worker files are not excluded by .gitignore "
            "or .flashignore."
        )
    problems: list[str] = []
    by_name: dict[str, list[Discovered]] = defaultdict(list)
    for ep in endpoints:
        by_name[ep.name].append(ep)
    for name, group in sorted(by_name.items()):
        if len(group) < 2:
            continue
        if all(ep.kind == "qb" for ep in group):
            listing = ", ".join(f"{ep.functions[0].name} ({ep.functions[0].where})" for ep in group)
            problems.append(
                f"queue-based endpoint {name!r} is given {len(group)} functions: {listing}. "
                "A queue-based endpoint runs exactly one function; give each its own "
                "Endpoint(name=...)."
            )
        else:
            listing = ", ".join(f"{ep.where} ({_kind(ep)})" for ep in group)
            problems.append(
                f"endpoint name {name!r} is declared {len(group)} times: {listing}. Endpoint "
                "names must be unique in a project (each is one serverless endpoint); rename "
                "one, or attach all the routes to a single Endpoint object."
            )
    owners: dict[str, list[tuple[Discovered, Function]]] = defaultdict(list)
    for ep in endpoints:
        for fn in ep.functions:
            owners[fn.name].append((ep, fn))
    for fn_name, owned in sorted(owners.items()):
        names = {ep.name for ep, _ in owned}
        if len(names) < 2:
            continue
        listing = " and ".join(f"{ep.name!r} ({fn.where})" for ep, fn in owned)
        problems.append(
            f"function name {fn_name!r} is served by endpoints {listing}. Function names must be "
            "unique across the project: the manifest and cross-endpoint calls find functions "
            "by name; rename one."
        )
    for ep in endpoints:
        problems.extend(_route_conflicts(ep))
    if problems:
        raise BuildError(
            "The project's endpoints conflict:\n" + "\n".join(f"  {p}" for p in problems)
        )


def _kind(ep: Discovered) -> str:
    return "queue-based" if ep.kind == "qb" else "load-balanced"


def _route_conflicts(ep: Discovered) -> list[str]:
    """Routes of one endpoint that differ only in their path parameters' names."""
    problems = []
    seen: dict[tuple[str, str], Function] = {}
    for fn in ep.functions:
        if not fn.http_method or not fn.http_path:
            continue
        shape = (fn.http_method, _PARAM.sub("{}", fn.http_path))
        other = seen.get(shape)
        if other is None:
            seen[shape] = fn
            continue
        problems.append(
            f"endpoint {ep.name!r}: route {fn.route} ({fn.where}) conflicts with {other.route} "
            f"({other.where}); they match the same requests. Use one path, or different "
            "literal segments."
        )
    return problems


def _is_main_guard(node: ast.stmt) -> bool:
    """``if __name__ == "__main__":`` (either way round): code a worker never runs."""
    if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
        return False
    test = node.test
    if len(test.ops) != 1 or not isinstance(test.ops[0], ast.Eq):
        return False
    sides = [test.left, test.comparators[0]]
    return any(isinstance(n, ast.Name) and n.id == "__name__" for n in sides) and any(
        isinstance(n, ast.Constant) and n.value == "__main__" for n in sides
    )


def _scan(rel: str, source: str) -> tuple[set[str], set[str]]:
    """The names a module refers to (variables, attributes, imported names), and the dotted
    names of the modules it may import, leaving out its ``if __name__ == "__main__":``
    blocks (a worker imports the module, so that code never runs there)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set(), set()
    module = module_name(rel) or ""
    package = module if rel.endswith("__init__.py") else module.rpartition(".")[0]
    names: set[str] = set()
    imports: set[str] = set()
    body = [stmt for stmt in tree.body if not _is_main_guard(stmt)]
    for node in (n for stmt in body for n in ast.walk(stmt)):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, ast.Import):
            imports.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.update(alias.name for alias in node.names)
            base = node.module or ""
            if node.level:  # relative: from the package, one level up per extra dot
                parts = package.split(".") if package else []
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            imports.add(base)
            imports.update(f"{base}.{alias.name}" if base else alias.name for alias in node.names)
    return names, imports


def makes_remote_calls(endpoints: list[Discovered], sources: Mapping[str, str]) -> dict[str, bool]:
    """Per endpoint: whether its code refers to a function served by another endpoint.

    A static check over the modules an endpoint's functions live in and the project modules
    they import, transitively (``sources`` maps project-relative paths to text): True when any
    of them names, as a variable, an attribute or an imported name, a decorated function or
    class of *another* endpoint. It over-approximates (a local variable that happens to share
    such a name counts, and so does a module imported for something else), which only costs
    the worker the cross-endpoint set-up and the key; it does not miss a call made through a
    helper module of the project.
    """
    owner = {fn.name: ep.name for ep in endpoints for fn in ep.functions}
    by_module = {name: rel for rel in sources if (name := module_name(rel))}
    scanned: dict[str, tuple[set[str], set[str]]] = {}

    def reachable_names(files: set[str]) -> set[str]:
        names: set[str] = set()
        todo, seen = sorted(files), set(files)
        while todo:
            rel = todo.pop()
            if rel not in scanned:
                scanned[rel] = _scan(rel, sources.get(rel, ""))
            found, imports = scanned[rel]
            names |= found
            for module in imports:
                dep = by_module.get(module)
                if dep is not None and dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return names

    out = {}
    for ep in endpoints:
        others = {name for name, res in owner.items() if res != ep.name}
        out[ep.name] = bool(reachable_names({fn.file for fn in ep.functions}) & others)
    return out


def build_manifest(
    endpoints: list[Discovered],
    *,
    project_name: str,
    python_version: str,
    generated_at: str,
    source_fingerprint: str,
    sources: Mapping[str, str],
    target: ImageTarget | None = None,
) -> manifest_mod.Manifest:
    """The manifest, validated by the one schema (:func:`flash_runtime.manifest.from_builtins`)."""
    remote = makes_remote_calls(endpoints, sources)
    target = target or ImageTarget("official")
    resources: dict[str, Any] = {}
    registry: dict[str, str] = {}
    routes: dict[str, dict[str, str]] = {}
    for ep in sorted(endpoints, key=lambda e: e.name):
        lb = ep.kind == "lb"
        first = ep.functions[0]  # declaration order: the module the endpoint lives in
        resource: dict[str, Any] = {
            "resource_type": resource_type(gpu=ep.is_gpu, load_balanced=lb),
            "file_path": first.file,
            "module_path": first.module,
            "functions": [_function_entry(fn) for fn in sorted(ep.functions, key=lambda f: f.name)],
            "is_load_balanced": lb,
            "makes_remote_calls": remote[ep.name],
            "max_concurrency": ep.max_concurrency,
            **ep.deploy_config,
        }
        if not resource.get("imageName"):
            resource["imageName"] = target.image(
                gpu=ep.is_gpu, load_balanced=lb, python_version=python_version
            )
        resources[ep.name] = resource
        for fn in ep.functions:
            registry[fn.name] = ep.name
        if lb:
            routes[ep.name] = {
                f"{fn.http_method} {fn.http_path}": fn.name
                for fn in sorted(ep.functions, key=lambda f: f"{f.http_method} {f.http_path}")
            }
    raw = {
        "version": "1.0",
        "python_version": python_version,
        "generated_at": generated_at,
        "project_name": project_name,
        "resources": resources,
        "function_registry": dict(sorted(registry.items())),
        "routes": routes,
        "source_fingerprint": source_fingerprint,
        "image_target": target.kind,
    }
    if target.kind != "official":
        raw["image_repository"] = target.repository
    return manifest_mod.from_builtins(raw, "generated manifest")


def _function_entry(fn: Function) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": fn.name,
        "module": fn.module,
        "is_async": fn.is_async,
        "is_class": fn.is_class,
    }
    if fn.is_class:
        entry["class_methods"] = list(fn.class_methods or [])
    if fn.http_method:
        entry["http_method"] = fn.http_method
        entry["http_path"] = fn.http_path
    if fn.is_generator:
        entry["is_generator"] = True
    return entry
