"""The child side of the development server's API schemas: import the functions, describe them.

Run by :mod:`flash_runtime.devserver.openapi` as
``python -P -m flash_runtime.devserver._schemas PROJECT_DIR REPORT_FILE`` with a JSON request on
stdin, ``{"functions": [{"key", "module", "name", "is_class"}, ...]}`` (from the manifest of the
build being served). For each function (each public method of a class endpoint) it builds the
worker's own :class:`~flash_runtime.worker.arguments.ArgSpec`, so the documented arguments are
exactly what the worker accepts, and asks msgspec for the JSON Schema of the arguments and of
the return annotation, plus the docstring. The report is one JSON object written to
``REPORT_FILE`` (user code may print to stdout):
``{"functions": {key: {...}}, "classes": {key: {...}}, "components": {...}, "errors": [...]}``
(a class endpoint's methods are ``key.method`` in ``functions``; its own docs are in
``classes``).

User code is imported here, in a child, never in the development server: a module that fails
to import (or blocks, until the parent's timeout) costs the documentation, not the server.
"""

from __future__ import annotations

import inspect
import json
import os
import sys
import traceback
import typing
from pathlib import Path
from typing import Any

_SIMPLE_DEFAULTS = (type(None), bool, int, float, str)
REF_TEMPLATE = "#/components/schemas/{name}"
PYDANTIC_REF_TEMPLATE = "#/components/schemas/{model}"


def _docs(obj: Any) -> tuple[str | None, str | None]:
    """(summary, description) from a docstring: its first line, and the rest."""
    doc = inspect.getdoc(obj)
    if not doc:
        return None, None
    first, _, rest = doc.partition("\n")
    return first.strip() or None, rest.strip() or None


def _is_request(hint: Any) -> bool:
    """A Starlette ``Request`` parameter: the worker passes the request, not a field."""
    if not inspect.isclass(hint) or not hint.__module__.startswith(("starlette", "fastapi")):
        return False
    from starlette.requests import HTTPConnection

    return issubclass(hint, HTTPConnection)


def _schema_ok(hint: Any) -> bool:
    import msgspec

    try:
        msgspec.json.schema(hint)
    except (TypeError, ValueError):
        return False
    return True


class _Function:
    """One callable's arguments struct, return type and docs."""

    def __init__(self, key: str, func: Any, *, skip_first: bool, doc_owner: Any) -> None:
        import msgspec

        from flash_runtime.worker.arguments import ArgSpec

        self.key = key
        spec = ArgSpec(func, skip_first=skip_first)
        try:
            hints = typing.get_type_hints(func)
        except Exception:
            hints = {}
        self.request_params = [n for n in spec.names if _is_request(hints.get(n))]
        fields = [
            (f.name, f.type) if f.required else (f.name, f.type, f.default)
            for f in msgspec.structs.fields(spec.struct)
            if f.name not in self.request_params
        ]
        # A name of our own (msgspec qualifies it with the module when names collide).
        self.struct = msgspec.defstruct(
            f"{key.replace(':', '_').replace('.', '_')}_input", fields, kw_only=True
        )
        self.defaults: dict[str, Any] = {}
        params = list(inspect.signature(func).parameters.values())
        for p in params[1:] if skip_first else params:
            if p.default is not inspect.Parameter.empty and isinstance(p.default, _SIMPLE_DEFAULTS):
                self.defaults[p.name] = p.default
        self.accepts_extra = spec.accepts_extra
        # Pydantic-validated parameters: their schemas come from pydantic (the struct has Any).
        self.models = {n: hints[n] for n in spec.models if n not in self.request_params}
        self.direct_models = [n for n, m in spec.models.items() if m.fields is not None]
        self.streams = inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func)
        from flash_runtime.worker.arguments import _models_in

        returns = hints.get("return", Any)
        self.model_returns = returns if not self.streams and _models_in(returns) else None
        self.returns = (
            returns
            if not self.streams and self.model_returns is None and _schema_ok(returns)
            else None
        )
        self.summary, self.description = _docs(func)
        if self.summary is None and doc_owner is not None:
            self.summary, self.description = _docs(doc_owner)


def _pydantic_schema(hint: Any, components: dict[str, Any], mode: str) -> dict[str, Any]:
    """Pydantic's JSON Schema of ``hint``, its definitions moved into ``components`` and a
    model class itself referred to there by name."""
    import pydantic

    schema: dict[str, Any] = pydantic.TypeAdapter(hint).json_schema(
        mode=mode,  # type: ignore[arg-type]
        ref_template=PYDANTIC_REF_TEMPLATE,
    )
    components.update(schema.pop("$defs", {}))
    if inspect.isclass(hint) and issubclass(hint, pydantic.BaseModel):
        name = hint.__name__
        if components.get(name, schema) != schema:  # its output shape differs from its input
            name += "Output" if mode == "serialization" else "Input"
        components[name] = schema
        return {"$ref": PYDANTIC_REF_TEMPLATE.format(model=name)}
    return schema


def describe(project: Path, functions: list[dict[str, Any]]) -> dict[str, Any]:
    """The report for ``functions`` of the project at ``project``."""
    import importlib

    import msgspec

    from flash_runtime.endpoint import unwrap

    errors: list[str] = []
    described: list[_Function] = []
    classes: dict[str, dict[str, str | None]] = {}
    for entry in functions:
        key, module_name, name = entry["key"], entry["module"], entry["name"]
        try:
            module = importlib.import_module(module_name)
            target = unwrap(getattr(module, name))
            if entry.get("is_class") or inspect.isclass(target):
                summary, description = _docs(target)
                classes[key] = {"summary": summary, "description": description}
                for method, func in inspect.getmembers(target, inspect.isfunction):
                    if not method.startswith("_"):
                        described.append(
                            _Function(f"{key}.{method}", func, skip_first=True, doc_owner=None)
                        )
            else:
                described.append(_Function(key, target, skip_first=False, doc_owner=None))
        except (Exception, SystemExit) as err:
            where = traceback.extract_tb(err.__traceback__)[-1:] if err.__traceback__ else []
            at = f" ({Path(where[0].filename).name}:{where[0].lineno})" if where else ""
            errors.append(f"{key}: {type(err).__name__}: {err}{at}")

    types: list[Any] = []
    for fn in described:
        types.append(fn.struct)
        if fn.returns is not None:
            types.append(fn.returns)
    schemas, components = msgspec.json.schema_components(types, ref_template=REF_TEMPLATE)
    out: dict[str, Any] = {}
    position = 0
    for fn in described:
        ref = schemas[position]["$ref"].rsplit("/", 1)[1]
        position += 1
        arguments = components.pop(ref)
        arguments.pop("title", None)
        for field, default in fn.defaults.items():
            prop = arguments.get("properties", {}).get(field)
            if prop is not None and "default" not in prop:
                prop["default"] = default
        if fn.accepts_extra:
            arguments["additionalProperties"] = True
        for field, hint in fn.models.items():
            schema = _pydantic_schema(hint, components, "validation")
            arguments.setdefault("properties", {})[field] = schema
        returns: Any = None
        if fn.returns is not None:
            returns = schemas[position]
            position += 1
        elif fn.model_returns is not None:
            returns = _pydantic_schema(fn.model_returns, components, "serialization")
        out[fn.key] = {
            "arguments": arguments,
            "returns": returns,
            "streams": fn.streams,
            "models": fn.direct_models,  # a lone one is the whole body, as in FastAPI
            "summary": fn.summary,
            "description": fn.description,
        }
    return {"functions": out, "classes": classes, "components": components, "errors": errors}


def main(argv: list[str]) -> None:
    """``PROJECT_DIR REPORT_FILE``, the request on stdin; exits without running atexit hooks."""
    project = Path(argv[0]).resolve()
    report_path = Path(argv[1])
    request = json.loads(sys.stdin.read() or "{}")
    from flash_runtime.pack._discover import _alias_sdk

    _alias_sdk()
    import msgspec  # noqa: F401 - before the project joins sys.path (a msgspec.py of its own)

    import flash_runtime.worker.arguments  # noqa: F401

    sys.path.insert(0, str(project))
    try:
        report = describe(project, request.get("functions", []))
    except Exception as err:  # a bug here must still produce a report
        report = {"functions": {}, "components": {}, "errors": [f"{type(err).__name__}: {err}"]}
    report_path.write_text(json.dumps(report, default=str), encoding="utf-8")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # user modules may have left threads or atexit hooks behind


if __name__ == "__main__":
    main(sys.argv[1:])
