"""Finding every ``@Endpoint`` of a project.

Why import in a subprocess, after a cheap text filter, rather than static analysis alone:

* An endpoint's configuration is ordinary Python: ``gpu=GPUS[0]``, ``workers=(1, n)``,
  ``Endpoint(**common)``, routes attached in a loop, an Endpoint defined in one module and its
  routes in another. Static analysis would have to re-implement the SDK to read those, and would
  disagree with what the worker sees. Importing runs the SDK itself, so the manifest holds exactly
  what ``Endpoint`` validated and recorded (``deploy_config()``, ``defined_at`` file:line), and
  configuration errors surface with the user's file and line.
* Importing is only as safe as the project's module level. The documentation tells users to
  import heavy packages inside their functions, so modules import quickly without them; one
  that imports a missing package at the top is reported with its file:line and that advice.
  Modules are imported under their dotted names, never as ``__main__``, so
  ``if __name__ == "__main__":`` blocks do not run.
* The imports run in one child interpreter, never in the process that builds: user code cannot
  pollute ``sys.modules``, leave threads behind, change the working directory or ``os.environ``
  of the CLI; a module that blocks at import time is stopped after a timeout (default 60 s,
  ``FLASH_DISCOVERY_TIMEOUT``) with the module and line it was stuck on; a crash of the
  interpreter is a build error rather than the end of the CLI. One child for all modules keeps
  the cost to one interpreter start (~50 ms), and shares imports between modules.
* Only candidate modules are imported: files whose text mentions ``Endpoint`` or applies a route
  decorator (``@api.post(...)``, for routes attached to an Endpoint imported from elsewhere) or
  runpod-flash's older ``@remote(...)``.
  Scripts, tests and helpers that do neither are not executed (the worker imports them only if
  endpoint modules do).

``runpod_flash`` resolves to our SDK in the child, as it does in the worker image.
"""

from __future__ import annotations

import json
import keyword
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..envvars import number
from .errors import BuildError
from .files import ProjectFile

DEFAULT_TIMEOUT = 60.0
_ROUTE_DECORATOR = re.compile(
    rb"^[ \t]*@(?:[\w.]+\.(?:get|post|put|delete|patch|route)|(?:[\w]+\.)?remote)\(", re.M
)
_HINT_MISSING = (
    "Flash imports your modules to find the endpoints, so a package imported at the top of a "
    "module must be installed where you build. Import heavy packages inside the function that "
    "uses them (and list them in dependencies=[...]), or install it locally."
)


@dataclass
class Function:
    """One function or class an endpoint serves, as the child saw it."""

    name: str
    module: str
    file: str  # project-relative posix path of the module
    line: int  # where it was attached to its Endpoint
    is_async: bool
    is_class: bool
    is_generator: bool
    class_methods: list[str] | None = None
    http_method: str | None = None
    http_path: str | None = None

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def route(self) -> str | None:
        return f"{self.http_method} {self.http_path}" if self.http_method else None


@dataclass
class Discovered:
    """One Endpoint object of the project."""

    name: str
    kind: str  # "qb" or "lb"
    is_gpu: bool
    has_image: bool
    where: str  # file:line of the Endpoint(...) call
    max_concurrency: int
    dependencies: list[str]
    deploy_config: dict[str, Any]
    functions: list[Function] = field(default_factory=list)


def module_name(rel: str) -> str | None:
    """``pkg/sub/mod.py`` -> ``pkg.sub.mod``; None when it cannot be imported by name."""
    parts = rel.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts.pop()
    if not parts or not all(p.isidentifier() and not keyword.iskeyword(p) for p in parts):
        return None
    return ".".join(parts)


def candidates(files: list[ProjectFile]) -> tuple[list[str], list[str]]:
    """Modules to import (sorted), and errors for candidate files that cannot be imported."""
    modules: list[str] = []
    errors: list[str] = []
    for f in files:
        if not f.rel.endswith(".py"):
            continue
        try:
            data = f.path.read_bytes()
        except OSError as err:
            errors.append(f"{f.rel}: cannot be read ({err.strerror})")
            continue
        if b"Endpoint" not in data and not _ROUTE_DECORATOR.search(data):
            continue
        name = module_name(f.rel)
        if name is None:
            errors.append(
                f"{f.rel}: declares endpoints, but its path is not an importable module name "
                "(each part must be a Python identifier); rename it, e.g. "
                f"{re.sub(r'[^0-9A-Za-z_/.]', '_', f.rel)}"
            )
            continue
        modules.append(name)
    return sorted(modules), errors


def timeout_seconds() -> float:
    value = number(
        os.environ, "FLASH_DISCOVERY_TIMEOUT", DEFAULT_TIMEOUT, minimum=None, unit="seconds",
        error=BuildError,
    )  # fmt: skip
    return value if value > 0 else DEFAULT_TIMEOUT  # 0 or less: the default


def discover(project_dir: Path, files: list[ProjectFile]) -> list[Discovered]:
    """Import the project's candidate modules in a child interpreter; return its endpoints.

    Raises BuildError listing every module that failed to import, with file:line.
    """
    project = project_dir.resolve()
    modules, errors = candidates(files)
    if errors:
        raise BuildError("Endpoint discovery failed:\n" + "\n".join(f"  {e}" for e in errors))
    if not modules:
        return []
    timeout = timeout_seconds()
    report_fd, report_name = tempfile.mkstemp(prefix="flash-discover-", suffix=".jsonl")
    os.close(report_fd)
    report = Path(report_name)
    env = dict(os.environ)
    # Discovery is not a worker and calls nothing: every decorated function and class is local.
    env.pop("FLASH_RESOURCE_NAME", None)
    env.pop("FLASH_CALLS", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # leave no __pycache__ in the user's project
    env["FLASH_DISCOVERY"] = "1"
    # -P: the working directory (the project) is not put on sys.path before the child has
    # imported what it needs; it adds the project itself afterwards.
    cmd = [sys.executable, "-P", "-m", "flash_runtime.pack._discover", str(project), str(report)]
    cmd += [repr(timeout), *modules]
    try:
        proc = subprocess.Popen(
            cmd,
            cwd=project,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            # The child stops itself at `timeout` (faulthandler); the margin is a backstop.
            _, stderr = proc.communicate(timeout=timeout + 10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
        lines = report.read_text(encoding="utf-8", errors="replace").splitlines()
    finally:
        report.unlink(missing_ok=True)
    return _interpret(project, lines, stderr.decode(errors="replace"), proc.returncode, timeout)


def _rel(project: Path, file: str | None) -> str:
    if not file:
        return "?"
    path = Path(file)
    try:
        return path.resolve().relative_to(project).as_posix()
    except ValueError:
        return str(path)


def _interpret(
    project: Path, lines: list[str], stderr: str, returncode: int | None, timeout: float
) -> list[Discovered]:
    result: dict[str, Any] | None = None
    last_module: str | None = None
    dump: list[str] = []
    for line in lines:
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                dump.append(line)
                continue
            if "importing" in obj:
                last_module = obj["importing"]
            elif "result" in obj:
                result = obj["result"]
        else:
            dump.append(line)
    if result is None:
        if any("Timeout" in line for line in dump[:3]) or returncode in (-9, None):
            raise BuildError(_timeout_message(project, last_module, dump, timeout))
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise BuildError(
            f"Endpoint discovery crashed while importing {last_module or 'the project'} "
            f"(exit code {returncode}).\n{tail}".rstrip()
        )
    if result["errors"]:
        raise BuildError(_import_errors_message(project, result["errors"]))
    return [_endpoint(project, raw) for raw in result["endpoints"]]


def _timeout_message(project: Path, module: str | None, dump: list[str], timeout: float) -> str:
    where = ""
    for line in dump:  # faulthandler: '  File "/path/x.py", line 12 in <module>'
        match = re.match(r'\s*File "(.+)", line (\d+)', line)
        if match and Path(match.group(1)).resolve().is_relative_to(project):
            where = f"{_rel(project, match.group(1))}:{match.group(2)}"
            break  # most recent call first: the innermost frame in the project
    what = f"importing module {module!r}" if module else "importing the project"
    at = f" (stuck at {where})" if where else ""
    return (
        f"Endpoint discovery timed out after {timeout:g} s while {what}{at}. "
        "Something at the top level of that module blocks or runs for long: a network call, a "
        "loop, loading a model. Move it into the function that needs it (or under "
        '`if __name__ == "__main__":`), or allow more time with FLASH_DISCOVERY_TIMEOUT=<seconds>.'
    )


def _import_errors_message(project: Path, errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors:
        where = _rel(project, err["file"]) if err["file"] else err["module"].replace(".", "/")
        if err["line"]:
            where += f":{err['line']}"
        message = err["message"].replace(f"{project}{os.sep}", "")
        text = f"  {where}: {err['type']}: {message}"
        if err["missing"] and not err["missing_is_local"]:
            top = err["missing"].split(".")[0]
            text += f"\n    `{top}` is not installed here. {_HINT_MISSING}"
        parts.append(text)
    noun = "module" if len(errors) == 1 else "modules"
    return f"{len(errors)} {noun} failed to import during endpoint discovery:\n" + "\n".join(parts)


def _endpoint(project: Path, raw: dict[str, Any]) -> Discovered:
    file, line = raw["defined_at"]
    ep = Discovered(
        name=raw["name"],
        kind=raw["kind"],
        is_gpu=raw["is_gpu"],
        has_image=raw["has_image"],
        where=f"{_rel(project, file)}:{line}",
        max_concurrency=raw["max_concurrency"],
        dependencies=list(raw["dependencies"]),
        deploy_config=raw["deploy_config"],
    )
    problems = []
    for fn in raw["functions"]:
        f_file, f_line = fn["defined_at"]
        module_file = fn["file"] or f_file
        function = Function(
            name=fn["name"],
            module=fn["module"],
            file=_rel(project, module_file),
            line=f_line,
            is_async=fn["is_async"],
            is_class=fn["is_class"],
            is_generator=fn["is_generator"],
            class_methods=fn.get("class_methods"),
            http_method=fn.get("http_method"),
            http_path=fn.get("http_path"),
        )
        if not Path(module_file).resolve().is_relative_to(project):
            problems.append(
                f"  {_rel(project, f_file)}:{f_line}: {function.name} (endpoint {ep.name!r}) is "
                f"defined in {module_file}, outside the project; the worker only has the "
                "project's files and its dependencies"
            )
        elif not fn["resolvable"]:
            problems.append(
                f"  {function.where}: {function.name} (endpoint {ep.name!r}) is not a "
                f"module-level name of {function.module}; the worker looks functions up by "
                "name, so define it at the top level of the module"
            )
        ep.functions.append(function)
    if problems:
        raise BuildError("Endpoint discovery failed:\n" + "\n".join(problems))
    return ep
