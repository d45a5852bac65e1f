"""The child side of endpoint discovery: import the candidate modules, report what registered.

Run by :mod:`flash_runtime.pack.discover` as
``python -m flash_runtime.pack._discover PROJECT_DIR REPORT_FILE TIMEOUT MODULE...`` with the
project directory as the working directory. It writes JSON lines to ``REPORT_FILE`` (never to
stdout, which user code may print to): ``{"importing": module}`` before each import, so the
parent can tell which module hung, then one ``{"result": ...}`` line. ``faulthandler`` dumps every
thread's stack into the same file if the imports outlive ``TIMEOUT``, so a hang is reported with
the line it is stuck on.

Modules are imported under their own dotted names, so ``if __name__ == "__main__":`` blocks do
not run, and their errors are collected rather than fatal, so one build reports every broken
module at once.
"""

from __future__ import annotations

import faulthandler
import importlib
import importlib.util
import inspect
import json
import os
import sys
import traceback
from pathlib import Path
from typing import IO, Any


def _alias_sdk() -> None:
    """Make ``import runpod_flash`` resolve to our SDK, as it does inside the worker image."""
    import flash_runtime

    ours = Path(flash_runtime.__file__).resolve().parent.parent / "runpod_flash"
    spec = importlib.util.find_spec("runpod_flash")
    origin = Path(spec.origin).resolve().parent if spec is not None and spec.origin else None
    if origin != ours:
        sys.modules["runpod_flash"] = flash_runtime


def _location(err: BaseException, project: Path) -> tuple[str | None, int | None]:
    """The innermost place in the project's own files the error passed through."""
    if isinstance(err, SyntaxError) and err.filename:
        path = Path(err.filename)
        if path.is_absolute() and path.resolve().is_relative_to(project):
            return str(path.resolve()), err.lineno
    found: tuple[str | None, int | None] = (None, None)
    for frame, lineno in traceback.walk_tb(err.__traceback__):
        filename = frame.f_code.co_filename
        if not filename.startswith("<") and Path(filename).resolve().is_relative_to(project):
            found = (str(Path(filename).resolve()), lineno)
    return found


def _describe_error(module: str, err: BaseException, project: Path) -> dict[str, Any]:
    file, line = _location(err, project)
    message = str(err)
    if isinstance(err, SyntaxError):
        message = err.msg or message
    elif isinstance(err, SystemExit):
        message = f"the module called sys.exit({err.code!r}) while being imported"
    # A module that is not there; `from m import nope` (a plain ImportError) is not that: m is
    # installed, the name is what is missing, and Python's message says so.
    missing = err.name if isinstance(err, ModuleNotFoundError) else None
    if (
        isinstance(err, ImportError)
        and not missing
        and err.name in ("runpod_flash", "flash_runtime")
    ):
        message += (
            f" (flash_runtime {err.name} exports runpod-flash 1.21's names; "
            "docs/reference/differences.md lists the two it does not)"
        )
    local = False
    if missing:
        top = missing.split(".")[0]
        local = (project / top).is_dir() or (project / f"{top}.py").is_file()
    return {
        "module": module,
        "type": type(err).__name__,
        "message": message,
        "file": file,
        "line": line,
        "missing": missing,
        "missing_is_local": local,
        "flash_error": _is_flash_error(err),
    }


def _shadowed(module: str, file: str, project: Path) -> dict[str, Any]:
    """The project's module has the name of one imported from elsewhere (stdlib, site-packages)."""
    rel = module.replace(".", "/")
    return {
        "module": module,
        "type": "NameClash",
        "message": (
            f"`import {module}` gives {file}, not the project's {rel}.py, because another module "
            "has that name; rename the project's file"
        ),
        "file": None,
        "line": None,
        "missing": None,
        "missing_is_local": False,
        "flash_error": False,
    }


def _is_flash_error(err: BaseException) -> bool:
    from flash_runtime.errors import FlashError

    return isinstance(err, FlashError)


def _module_file(module: str) -> str | None:
    mod = sys.modules.get(module)
    file = getattr(mod, "__file__", None)
    return str(Path(file).resolve()) if file else None


def _generator_kind(func: Any) -> bool:
    return inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func)


def _resolvable(module: str, name: str, target: Any, endpoint: Any) -> bool:
    """Whether the worker can find ``target`` as ``getattr(import_module(module), name)``."""
    from flash_runtime.endpoint import endpoint_of, unwrap

    obj = getattr(sys.modules.get(module), name, None)
    if obj is None:
        return False
    return obj is target or unwrap(obj) is target or endpoint_of(obj) is endpoint


def _describe_function(endpoint: Any, func: Any, where: Any, route: Any = None) -> dict[str, Any]:
    is_class = inspect.isclass(func)
    module = getattr(func, "__module__", None) or ""
    name = getattr(func, "__name__", repr(func))
    entry: dict[str, Any] = {
        "name": name,
        "module": module,
        "file": _module_file(module),
        "defined_at": [str(where.file), where.line],
        "is_class": is_class,
        "resolvable": _resolvable(module, name, func, endpoint),
    }
    if is_class:
        methods = [
            attr
            for attr, member in vars(func).items()
            if not attr.startswith("_") and inspect.isfunction(member)
        ]
        entry["class_methods"] = methods
        entry["is_async"] = any(
            inspect.iscoroutinefunction(m) or inspect.isasyncgenfunction(m)
            for attr, m in vars(func).items()
            if attr in methods
        )
        entry["is_generator"] = False
    else:
        entry["is_async"] = inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)
        entry["is_generator"] = _generator_kind(func)
    if route is not None:
        entry["http_method"] = route.method
        entry["http_path"] = route.path
    return entry


def _describe_endpoint(endpoint: Any) -> dict[str, Any]:
    if endpoint.target is not None:
        where = endpoint.target_defined_at or endpoint.defined_at
        functions = [_describe_function(endpoint, endpoint.target, where)]
    else:
        functions = [_describe_function(endpoint, r.func, r.defined_at, r) for r in endpoint.routes]
    return {
        "name": endpoint.name,
        "kind": endpoint.kind,
        "is_gpu": endpoint.is_gpu,
        "has_image": bool(endpoint.image),
        "defined_at": [str(endpoint.defined_at.file), endpoint.defined_at.line],
        "max_concurrency": endpoint.max_concurrency,
        "dependencies": list(endpoint.dependencies),
        "deploy_config": endpoint.deploy_config(),
        "functions": functions,
    }


def _emit(report: IO[str], obj: dict[str, Any]) -> None:
    report.write(json.dumps(obj, default=str) + "\n")
    report.flush()


def main(argv: list[str]) -> None:
    project = Path(argv[0]).resolve()
    report_path, timeout, modules = argv[1], float(argv[2]), argv[3:]
    report = open(report_path, "a", encoding="utf-8")  # noqa: SIM115 - kept open for faulthandler
    faulthandler.dump_traceback_later(timeout, exit=True, file=report)
    _alias_sdk()
    # Everything discovery itself needs is imported before the project joins sys.path (the
    # parent runs us with -P, so it is not there yet): a project module named like one of
    # them (json.py, inspect.py) must not replace it, and is reported as a name clash instead.
    importlib.import_module("flash_runtime.errors")
    from flash_runtime.endpoint import registered_endpoints

    sys.path.insert(0, str(project))

    errors = []
    for module in modules:
        _emit(report, {"importing": module})
        try:
            imported = importlib.import_module(module)
        except (Exception, SystemExit) as err:
            errors.append(_describe_error(module, err, project))
            continue
        file = getattr(imported, "__file__", None)
        if file and not Path(file).resolve().is_relative_to(project):
            errors.append(_shadowed(module, file, project))
    faulthandler.cancel_dump_traceback_later()
    try:
        endpoints = [_describe_endpoint(e) for e in registered_endpoints()]
    except Exception as err:  # a broken Endpoint must not lose the errors found so far
        errors.append(_describe_error("<endpoints>", err, project))
        endpoints = []
    _emit(report, {"result": {"endpoints": endpoints, "errors": errors}})
    report.close()
    # User modules may have started non-daemon threads or registered atexit hooks; discovery
    # is finished and must not wait for them.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
