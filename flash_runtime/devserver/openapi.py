"""The development server's OpenAPI 3.1 document, from the manifest and the functions' hints.

:func:`compute_schemas` runs :mod:`._schemas` in a child interpreter (user code never enters the
development server's process) to get each function's argument and return schemas (msgspec's
JSON Schema, which is OpenAPI 3.1's dialect) and docstring; :func:`build_document` lays them out
as the development server serves them:

* a queue-based endpoint ``NAME``: ``POST /NAME/runsync`` and ``POST /NAME/run`` with the body
  ``{"input": {...arguments}}``, and ``GET /NAME/status/{job_id}``;
* a load-balanced route ``METHOD /path`` of endpoint ``NAME``: ``METHOD /NAME/path``, its
  arguments as the worker reads them: ``{name}`` path parameters, the query string for GET, the
  JSON body's fields for POST, PUT, PATCH and DELETE.

A function whose schema cannot be computed is still documented, with an open schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from ..protocol.wire import JobStatus

if TYPE_CHECKING:
    from ..manifest import Manifest, Resource

SCHEMA_TIMEOUT_S = 30.0
JOB_STATUSES = [status.value for status in JobStatus]
_PATH_PARAM = re.compile(r"{([A-Za-z_][A-Za-z0-9_]*)(?::[A-Za-z_]+)?}")

Report = dict[str, Any]


def function_key(resource: str, function: str) -> str:
    """How the schema report names a function: ``resource:function``."""
    return f"{resource}:{function}"


async def compute_schemas(
    project: Path, manifest: Manifest, timeout: float = SCHEMA_TIMEOUT_S
) -> Report:
    """The schema report of every function in ``manifest`` (see :mod:`._schemas`).

    Never raises for a problem of the user's code: it comes back in ``report["errors"]``.
    """
    functions = [
        {
            "key": function_key(name, fn.name),
            "module": fn.module,
            "name": fn.name,
            "is_class": fn.is_class,
        }
        for name, resource in sorted(manifest.resources.items())
        for fn in resource.functions
    ]
    fd, name = tempfile.mkstemp(prefix="flash-schemas-", suffix=".json")
    os.close(fd)
    report_path = Path(name)
    env = dict(os.environ)
    env.pop("FLASH_RESOURCE_NAME", None)  # not a worker: calls between endpoints stay local
    env.update(PYTHONDONTWRITEBYTECODE="1", FLASH_DISCOVERY="1")
    stderr = b""
    try:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-P",
            "-m",
            "flash_runtime.devserver._schemas",
            str(project),
            str(report_path),
            cwd=project,
            env=env,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            async with asyncio.timeout(timeout):
                _, stderr = await proc.communicate(orjson.dumps({"functions": functions}))
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return _failed(f"importing the project took over {timeout:g}s")
        finally:
            if proc.returncode is None:  # cancelled: do not leave it behind
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
        raw = report_path.read_bytes()
    except OSError as err:
        return _failed(f"cannot run the schema helper: {err}")
    finally:
        report_path.unlink(missing_ok=True)
    if not raw:
        tail = stderr.decode(errors="replace").strip().splitlines()[-5:]
        return _failed("the schema helper crashed: " + " | ".join(tail))
    report: Report = orjson.loads(raw)
    return report


def _failed(message: str) -> Report:
    return {"functions": {}, "components": {}, "errors": [message]}


# -- the document ---------------------------------------------------------------------------

OPEN_OBJECT: dict[str, Any] = {"type": "object"}
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
        "field": {"type": ["string", "null"]},
        "request_id": {"type": "string"},
    },
    "required": ["error"],
}


def openapi_path(path: str) -> str:
    """A worker route path in OpenAPI's syntax: ``{id:int}`` becomes ``{id}``."""
    return _PATH_PARAM.sub(r"{\1}", path)


def path_params(path: str) -> list[str]:
    """The ``{name}`` parameters of a route path, in order."""
    return _PATH_PARAM.findall(path)


def _json_content(schema: dict[str, Any], example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"application/json": media}


_SAMPLES: dict[str, Any] = {"integer": 1, "number": 1.5, "boolean": True, "null": None}


def example_of(
    schema: dict[str, Any], components: dict[str, Any], name: str = "value", depth: int = 0
) -> Any:
    """A value that fits ``schema``, for "Try it out" to send as it stands: the default when
    there is one, else the first enum or example, else a sample of the type (a string is the
    field's name). Only required object fields, and those with defaults, are included."""
    if depth > 8:
        return None
    if "$ref" in schema:
        target = components.get(str(schema["$ref"]).rsplit("/", 1)[-1]) or {}
        return example_of(target, components, name, depth + 1)
    if "default" in schema:
        return schema["default"]
    for key in ("const", "example"):
        if key in schema:
            return schema[key]
    if schema.get("examples"):
        return schema["examples"][0]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = [o for o in schema.get(key) or [] if o.get("type") != "null"]
        if options:
            return example_of(options[0], components, name, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "string":
        return {"date-time": "2026-01-01T00:00:00Z", "date": "2026-01-01"}.get(
            str(schema.get("format")), name
        )
    if kind == "array":
        return [example_of(schema.get("items") or {}, components, name, depth + 1)]
    if kind == "object" or "properties" in schema:
        required = set(schema.get("required") or [])
        return {
            key: example_of(sub, components, key, depth + 1)
            for key, sub in (schema.get("properties") or {}).items()
            if key in required or "default" in sub
        }
    return _SAMPLES.get(str(kind), name)


def _errors(*codes: str) -> dict[str, Any]:
    text = {
        "401": "The platform refused the key (the development server adds it).",
        "404": "Unknown endpoint, route or job.",
        "422": "The arguments do not fit the function's type hints; `field` names the culprit.",
        "500": "The function raised; the worker keeps serving.",
        "502": "The platform or the worker could not be reached.",
        "503": "No worker became ready in time.",
    }
    return {
        code: {
            "description": text[code],
            "content": _json_content({"$ref": "#/components/schemas/Error"}),
        }
        for code in codes
    }


def _operation(
    info: dict[str, Any] | None, fallback: str, tag: str, operation_id: str
) -> dict[str, Any]:
    op: dict[str, Any] = {"tags": [tag], "operationId": operation_id}
    summary = (info or {}).get("summary") or fallback
    op["summary"] = summary
    description = (info or {}).get("description")
    if description:
        op["description"] = description
    return op


def _arguments(info: dict[str, Any] | None) -> dict[str, Any]:
    if info is None:
        return {"type": "object", "additionalProperties": True}
    return copy.deepcopy(info["arguments"])


def _route_operation(
    resource_name: str,
    method: str,
    path: str,
    function: str,
    info: dict[str, Any] | None,
    components: dict[str, Any],
) -> dict[str, Any]:
    op = _operation(
        info,
        function,
        resource_name,
        f"{resource_name}__{function}__{method.lower()}",
    )
    arguments = _arguments(info)
    properties: dict[str, Any] = arguments.get("properties") or {}
    required = set(arguments.get("required") or [])
    in_path = path_params(path)
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": properties.get(name) or {"type": "string"},
            "example": example_of(properties.get(name) or {"type": "string"}, components, name),
        }
        for name in in_path
    ]
    rest = {k: v for k, v in properties.items() if k not in in_path}
    if method in ("GET", "HEAD"):
        parameters += [
            {
                "name": name,
                "in": "query",
                "required": name in required,
                "schema": schema,
                **({"example": example_of(schema, components, name)} if name in required else {}),
            }
            for name, schema in rest.items()
        ]
    elif len(rest) == 1 and next(iter(rest)) in (info or {}).get("models", ()):
        # FastAPI's shape: a lone model argument is the body itself.
        body = copy.deepcopy(next(iter(rest.values())))
        op["requestBody"] = {
            "required": bool(set(rest) & required),
            "content": _json_content(body, example_of(body, components)),
        }
    elif rest or arguments.get("additionalProperties"):
        body = {k: v for k, v in arguments.items() if k not in ("properties", "required")}
        body["type"] = "object"
        body["properties"] = rest
        body_required = sorted(n for n in required if n in rest)
        if body_required:
            body["required"] = body_required
        op["requestBody"] = {
            "required": bool(body_required),
            "content": _json_content(body, example_of(body, components)),
        }
    if parameters:
        op["parameters"] = parameters
    returns = (info or {}).get("returns")
    ok: dict[str, Any] = {"description": "The function's return value."}
    if info is not None and info.get("streams"):
        ok = {
            "description": "The chunks the generator yields: a JSON array, or server-sent "
            "events when the request accepts text/event-stream.",
            "content": {
                "application/json": {"schema": {"type": "array"}},
                "text/event-stream": {"schema": {"type": "string"}},
            },
        }
    elif returns is not None:
        ok["content"] = _json_content(returns)
    op["responses"] = {"200": ok, **_errors("422", "500", "502", "503")}
    return op


def _queue_input(resource_name: str, fn_name: str, report: Report) -> dict[str, Any]:
    """The schema of ``input``: the function's arguments; for a class, one per method."""
    functions: dict[str, Any] = report.get("functions") or {}
    key = function_key(resource_name, fn_name)
    if key in functions:
        arguments = _arguments(functions[key])
        properties = arguments.get("properties") or {}
        if len(properties) == 1 and next(iter(properties)) in functions[key].get("models", ()):
            return dict(next(iter(properties.values())))  # the input is the model itself
        return arguments
    methods = sorted(k for k in functions if k.startswith(key + "."))
    if not methods:
        return {"type": "object", "additionalProperties": True}
    options = []
    for method_key in methods:
        schema = _arguments(functions[method_key])
        method = method_key.rsplit(".", 1)[1]
        schema["title"] = method
        if functions[method_key].get("summary"):
            schema["description"] = functions[method_key]["summary"]
        schema.setdefault("properties", {})["method"] = {"const": method}
        if len(methods) > 1:
            schema["required"] = sorted({*schema.get("required", []), "method"})
        options.append(schema)
    return options[0] if len(options) == 1 else {"anyOf": options}


def _queue_returns(resource_name: str, fn_name: str, report: Report) -> dict[str, Any]:
    info = (report.get("functions") or {}).get(function_key(resource_name, fn_name))
    if info is None or info.get("returns") is None:
        return {}
    if info.get("streams"):
        return {"type": "array"}
    returns: dict[str, Any] = info["returns"]
    return returns


def _queue_operations(
    resource_name: str, resource: Resource, report: Report, components: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    fn = resource.functions[0]
    key = function_key(resource_name, fn.name)
    info = (report.get("functions") or {}).get(key) or (report.get("classes") or {}).get(key)
    input_schema = _queue_input(resource_name, fn.name, report)
    # What "Try it out" sends: the function's arguments, without webhook or policy.
    example = {"input": example_of(input_schema, components, "input")}
    body = {
        "type": "object",
        "properties": {
            "input": input_schema,
            "webhook": {"type": "string", "description": "URL to POST the final status to."},
            "policy": {
                "type": "object",
                "description": "executionTimeout and ttl (ms), as on Runpod.",
            },
        },
        "required": ["input"],
    }
    job = {
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "status": {"enum": JOB_STATUSES},
            "output": _queue_returns(resource_name, fn.name, report),
            "error": {"type": "string"},
            "delayTime": {"type": "integer"},
            "executionTime": {"type": "integer"},
        },
        "required": ["id", "status"],
    }
    base = f"/{resource_name}"
    runsync = _operation(info, fn.name, resource_name, f"{resource_name}__runsync")
    runsync["description"] = (
        (runsync.get("description", "") + "\n\n").lstrip()
        + "Runs the job and waits for its result (`?wait=` ms, default 90000); a job still "
        "running then is answered with its id and status, to poll with `/status`."
    )
    runsync["parameters"] = [
        {"name": "wait", "in": "query", "required": False, "schema": {"type": "integer"}}
    ]
    runsync["requestBody"] = {"required": True, "content": _json_content(body, example)}
    runsync["responses"] = {
        "200": {
            "description": "The job, with its output once done.",
            "content": _json_content(job),
        },
        **_errors("404", "502"),
    }
    run = _operation(info, fn.name, resource_name, f"{resource_name}__run")
    run["summary"] = f"{run['summary']} (queued; poll /status)"
    run["requestBody"] = {"required": True, "content": _json_content(body, example)}
    queued = {
        "type": "object",
        "properties": {"id": {"type": "string"}, "status": {"enum": JOB_STATUSES}},
        "required": ["id", "status"],
    }
    run["responses"] = {
        "200": {"description": "The queued job's id.", "content": _json_content(queued)},
        **_errors("502"),
    }
    status = {
        "tags": [resource_name],
        "operationId": f"{resource_name}__status",
        "summary": f"Status and output of a {fn.name} job",
        "parameters": [
            {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": {
            "200": {"description": "The job.", "content": _json_content(job)},
            **_errors("404", "502"),
        },
    }
    return {
        f"{base}/runsync": {"post": runsync},
        f"{base}/run": {"post": run},
        f"{base}/status/{{job_id}}": {"get": status},
    }


def build_document(
    manifest: Manifest,
    report: Report,
    *,
    title: str,
    version: str,
    endpoint_notes: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every endpoint in ``manifest``, as the development server
    serves them (``endpoint_notes``: a line per endpoint for its tag, e.g. where it runs)."""
    paths: dict[str, dict[str, Any]] = {}
    tags = []
    notes = endpoint_notes or {}
    functions: dict[str, Any] = report.get("functions") or {}
    components: dict[str, Any] = report.get("components") or {}
    for name, resource in sorted(manifest.resources.items()):
        kind = "Load-balanced" if resource.is_load_balanced else "Queue-based"
        tag: dict[str, Any] = {"name": name, "description": f"{kind} endpoint `{name}`."}
        if notes.get(name):
            tag["description"] += " " + notes[name]
        tags.append(tag)
        if not resource.is_load_balanced:
            paths.update(_queue_operations(name, resource, report, components))
            continue
        for fn in resource.functions:
            if not (fn.http_method and fn.http_path):
                continue
            path = openapi_path(f"/{name}{fn.http_path}")
            method = fn.http_method.upper()
            info = functions.get(function_key(name, fn.name))
            paths.setdefault(path, {})[method.lower()] = _route_operation(
                name, method, fn.http_path, fn.name, info, components
            )
    description = (
        "Every endpoint of the app, through the development server (`flash run`): no key is "
        "needed here, the server adds the platform's. Paths start with the endpoint's name as "
        "written in `Endpoint(name=...)`."
    )
    errors = report.get("errors") or []
    if errors:
        description += "\n\nSome schemas could not be computed:\n" + "\n".join(
            f"- {e}" for e in errors
        )
    components = dict(report.get("components") or {})
    components["Error"] = ERROR_SCHEMA
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "servers": [{"url": "/"}],
        "tags": tags,
        "paths": paths,
        "components": {"schemas": components},
    }
