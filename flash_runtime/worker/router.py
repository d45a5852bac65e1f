"""The load-balanced worker's HTTP router: a resource's routes as one ASGI application.

A request goes: route lookup → arguments → call → response.

* **Lookup**: a dict for static paths; ``{name}`` paths are compiled once with Starlette's
  ``compile_path`` and tried after the static ones, in the manifest's order (so
  ``/items/latest`` wins over ``/items/{item_id}``). A trailing slash is ignored and ``HEAD`` is served by the
  ``GET`` route. Unknown path → 404, known path with another method → 405 with ``Allow``.
* **Arguments**: the function's :class:`~.arguments.ArgSpec` checks them against its type hints.
  POST/PUT/PATCH/DELETE take the JSON body's top-level fields (empty body: no arguments; the
  query string is ignored, as in the reference implementation); GET takes the query string, a
  key repeated (``?tag=a&tag=b``) becoming a list when the hint is a sequence. ``{name}`` path
  parameters are merged in and win over a body or query field of the same name (the reference
  implementation does the same). Query and path values are strings converted to the hinted
  types; body values must already have the right JSON type. A parameter annotated
  ``starlette.requests.Request`` receives the request (its body still readable).
  Unknown fields are ignored unless the function takes ``**kwargs``.
* **Call**: ``async def`` is awaited on the event loop, ``def`` runs in a worker thread (so a
  slow one never blocks ``/ping`` or other requests), generators are iterated.
* **Response**: see :mod:`.lb_responses`. Errors are JSON: 400 (a body that is not JSON, or too
  deep to read), 422 (invalid arguments, naming the field), 500 (the user's exception: type,
  message, request id; traceback logged), 404, 405, 413 (body over the limit). Every response carries ``X-Request-ID`` (the client's, or a fresh
  one of 32 hex digits: 64 random bits drawn once per process, then a counter; ``uuid4`` would
  ask the kernel for 16 random bytes on every request).

Why not ``Starlette(routes=[...])``: its per-request middleware stack (ServerErrorMiddleware,
ExceptionMiddleware) and linear route scan cost more than everything else this router does per
request, and it would turn our JSON errors into its plain-text ones. This is still Starlette at
heart - its path compiler, ``Request``, ``Response`` and ``StreamingResponse`` - with the
dispatch reduced to a dict lookup, which is what a worker serving one hot route needs.
"""

from __future__ import annotations

import inspect
import itertools
import logging
import os
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import partial
from re import Pattern
from typing import Any
from urllib.parse import parse_qsl

import anyio.to_thread
import msgspec
import msgspec.inspect
from starlette.requests import HTTPConnection, Request
from starlette.routing import compile_path
from starlette.types import Message, Receive, Scope, Send

from ..errors import describe
from . import request_context
from .arguments import ArgSpec, InvalidArguments, MalformedBody, decode_any, decode_object
from .lb_responses import error_response, send_result
from .loader import Callee, LoadedResource, kind_of

log = logging.getLogger("flash_runtime.worker.lb")

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
HEALTHY = {"status": "healthy"}


def _new_ids() -> None:
    """A new process-wide prefix and counter for fresh request ids (module docstring)."""
    global _id_prefix, _id_count
    _id_prefix, _id_count = os.urandom(8).hex(), itertools.count()


_id_prefix, _id_count = "", itertools.count()
_new_ids()
os.register_at_fork(after_in_child=_new_ids)  # a forked child would repeat its parent's ids

_SEQUENCE_TYPES = (
    msgspec.inspect.ListType,
    msgspec.inspect.SetType,
    msgspec.inspect.FrozenSetType,
    msgspec.inspect.VarTupleType,
    msgspec.inspect.TupleType,
)


class BodyTooLarge(Exception):
    """The request body exceeds the worker's limit."""


class ClientGone(Exception):
    """The client disconnected before its request body arrived."""


def _is_sequence(hint: Any) -> bool:
    try:
        info = msgspec.inspect.type_info(hint)
    except (TypeError, ValueError):
        return False
    options = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
    return any(isinstance(t, _SEQUENCE_TYPES) for t in options)


def _request_params(func: Callable[..., Any]) -> tuple[str, ...]:
    """Parameters annotated with Starlette's ``Request`` (or another ``HTTPConnection``)."""
    try:
        hints = typing.get_type_hints(func)
    except Exception:
        return ()
    return tuple(
        name
        for name, hint in hints.items()
        if name != "return" and inspect.isclass(hint) and issubclass(hint, HTTPConnection)
    )


async def _ping() -> dict[str, str]:
    return HEALTHY


class BoundRoute:
    """One ``METHOD /path`` and the function it calls, with what binding needs precomputed."""

    __slots__ = (
        "body_args",
        "callee",
        "fast",
        "list_fields",
        "method",
        "path",
        "path_params",
        "path_types",
        "regex",
        "request_params",
        "whole_body",
    )

    def __init__(self, method: str, path: str, callee: Callee) -> None:
        self.method = method
        self.path = path
        self.callee = callee
        spec = callee.args
        fields = {f.name: f.type for f in msgspec.structs.fields(spec.struct)}
        self.regex: Pattern[str] | None = None
        self.path_params: tuple[str, ...] = ()
        if "{" in path:
            self.regex, _, convertors = compile_path(path)
            self.path_params = tuple(convertors)
        # Path values convert to the parameter's type; a path parameter the function does not
        # declare reaches it (as a string) only through **kwargs.
        self.path_types = {name: fields[name] for name in self.path_params if name in fields}
        for name in self.path_params:
            if name not in fields and not spec.accepts_extra:
                log.warning(
                    "route %s %s: %s() has no parameter %r; the path value is dropped",
                    method,
                    path,
                    callee.name,
                    name,
                )
        self.list_fields = frozenset(name for name, hint in fields.items() if _is_sequence(hint))
        self.request_params = _request_params(callee.func)
        self.body_args = method in BODY_METHODS
        self.whole_body = callee.whole_body
        # The hot path: the body is the whole argument set, decoded and checked in one pass.
        self.fast = (
            self.body_args and not self.path_params and not self.request_params
        ) and not self.whole_body

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"

    def path_value(self, name: str, value: str) -> Any:
        hint = self.path_types.get(name)
        if hint is None:
            return value
        try:
            return msgspec.convert(value, hint, strict=False)
        except msgspec.ValidationError as err:
            raise InvalidArguments(f"path parameter {name!r}: {err}", name) from None


class Router:
    """The ASGI application serving a load-balanced resource's routes (and ``GET /ping``)."""

    def __init__(
        self,
        routes: Iterable[tuple[str, str, Callee]],
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.max_body_bytes = max_body_bytes
        self._static: dict[str, dict[str, BoundRoute]] = {}
        self._dynamic: dict[str, tuple[Pattern[str], dict[str, BoundRoute]]] = {}
        ping = Callee("ping", _ping, "async", ArgSpec(_ping))
        for method, path, callee in [("GET", "/ping", ping), *routes]:
            method = method.upper()
            if len(path) > 1:
                path = path.rstrip("/")
            route = BoundRoute(method, path, callee)
            if route.regex is None:
                table = self._static.setdefault(path, {})
            else:
                table = self._dynamic.setdefault(path, (route.regex, {}))[1]
            if method in table:
                raise ValueError(f"route {method} {path} is declared twice")
            table[method] = route
        self.routes = [
            route
            for table in (*self._static.values(), *(t for _, t in self._dynamic.values()))
            for route in table.values()
        ]

    @classmethod
    def for_resource(
        cls, loaded: LoadedResource, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    ) -> Router:
        """The router of a loaded load-balanced resource, from its functions' HTTP routes."""
        from ..errors import ManifestError

        if loaded.routes is not None:
            return cls(loaded.routes, max_body_bytes=max_body_bytes)
        routes: list[tuple[str, str, Callee]] = []
        for fn in loaded.functions:
            entry = fn.entry
            if fn.callee is None or not (entry.http_method and entry.http_path):
                raise ManifestError(
                    f"{entry.name} in load-balanced resource {loaded.name!r} is not a route "
                    "function (routes are plain functions declared with @endpoint.get/post/...); "
                    "rebuild the artifact with `flash build`"
                )
            routes.append((entry.http_method, entry.http_path, fn.callee))
        return cls(routes, max_body_bytes=max_body_bytes)

    @classmethod
    def from_functions(
        cls,
        routes: Mapping[str, Callable[..., Any]],
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> Router:
        """A router from ``{"POST /path": function}`` (for tests and embedding)."""
        callees = []
        for key, func in routes.items():
            method, _, path = key.partition(" ")
            callees.append(
                (method, path, Callee(func.__name__, func, kind_of(func), ArgSpec(func)))
            )
        return cls(callees, max_body_bytes=max_body_bytes)

    # -- dispatch ---------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1000})
            return
        methods = self._static.get(scope["path"])
        if methods is not None:
            route = methods.get(scope["method"])
            if route is not None:
                await self._handle(route, {}, scope, receive, send)
                return
        await self._lookup(scope, receive, send)

    async def _lookup(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The slow path: parameterised paths, trailing slashes, HEAD, 404 and 405."""
        method: str = scope["method"]
        path: str = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/") or "/"
        # Every route whose path matches, static first; the first with this method serves it.
        matches: list[tuple[dict[str, BoundRoute], dict[str, str]]] = []
        if path in self._static:
            matches.append((self._static[path], {}))
        for regex, table in self._dynamic.values():
            match = regex.match(path)
            if match is not None:
                matches.append((table, match.groupdict()))
        for table, values in matches:
            route = table.get(method) or (table.get("GET") if method == "HEAD" else None)
            if route is not None:
                await self._handle(route, values, scope, receive, send)
                return
        request_id = read_headers(scope)[0]
        if not matches:
            listing = ", ".join(r.key for r in self.routes[:30])
            if len(self.routes) > 30:
                listing += f", ... ({len(self.routes)} in all)"
            await error_response(
                404,
                "NotFound",
                f"no route {method} {scope['path']}; routes: {listing}",
                request_id,
            )(scope, receive, send)
            return
        methods = {m for table, _ in matches for m in table}
        allowed = sorted(methods | ({"HEAD"} if "GET" in methods else set()))
        await error_response(
            405,
            "MethodNotAllowed",
            f"{method} is not allowed on {scope['path']}; allowed: {', '.join(allowed)}",
            request_id,
            headers={"allow": ", ".join(allowed)},
        )(scope, receive, send)

    async def _handle(
        self,
        route: BoundRoute,
        path_values: dict[str, str],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        request_id, content_length, accept = read_headers(scope)
        # Lines logged or printed while it runs start with the request id (uvicorn runs each
        # request in a task of its own, so the value goes with the request).
        request_context.current.set(request_id)
        callee = route.callee
        try:
            kwargs = await self._arguments(route, path_values, scope, receive, content_length)
            kind = callee.kind
            if kind == "async":
                result = await callee.func(**kwargs)
            elif kind == "sync":
                result = await anyio.to_thread.run_sync(partial(callee.func, **kwargs))
            else:  # generator functions: calling one runs nothing yet
                result = callee.func(**kwargs)
        except MalformedBody as err:
            await error_response(400, "MalformedBody", err.message, request_id)(
                scope, receive, send
            )
            return
        except InvalidArguments as err:
            await error_response(422, "InvalidArguments", err.message, request_id, field=err.field)(
                scope, receive, send
            )
            return
        except BodyTooLarge:
            # The connection stays open: uvicorn discards the rest of the body, so the client
            # can finish sending and read this answer (closing now would reset it instead).
            await error_response(
                413,
                "PayloadTooLarge",
                f"request body exceeds the worker's limit of {self.max_body_bytes} bytes "
                "(FLASH_MAX_BODY_MB)",
                request_id,
            )(scope, receive, send)
            return
        except ClientGone:
            return
        except Exception as exc:
            await self._failed(exc, route, scope, receive, send, request_id)
            return
        try:
            await send_result(result, route.key, request_id, accept, scope, receive, send)
        except Exception as exc:
            await self._failed(exc, route, scope, receive, send, request_id)

    async def _failed(
        self,
        exc: Exception,
        route: BoundRoute,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: str,
    ) -> None:
        from starlette.exceptions import HTTPException

        if isinstance(exc, HTTPException):  # FastAPI-style `raise HTTPException(404, ...)`
            await error_response(
                exc.status_code,
                "HTTPException",
                str(exc.detail),
                request_id,
                headers=exc.headers,
                detail=exc.detail,
            )(scope, receive, send)
            return
        log.error(
            "request %s: %s (%s) raised %s: %s",
            request_id,
            route.key,
            route.callee.name,
            type(exc).__name__,
            exc,
            exc_info=exc,
        )
        await error_response(500, type(exc).__name__, describe(exc), request_id)(
            scope, receive, send
        )

    # -- arguments --------------------------------------------------------------------------

    async def _arguments(
        self,
        route: BoundRoute,
        path_values: dict[str, str],
        scope: Scope,
        receive: Receive,
        content_length: bytes | None,
    ) -> dict[str, Any]:
        spec = route.callee.args
        body = b""
        if route.body_args:
            body = await self._body(receive, content_length)
            if route.fast:
                return spec.from_json(body)
            if route.whole_body:
                return {"body": decode_any(body)} if body.strip() else {}
            data = decode_object(body)
            for name, value in path_values.items():
                data[name] = route.path_value(name, value)
            for name in route.request_params:
                data[name] = None
            kwargs = spec.from_mapping(data, fixed=(*path_values, *route.request_params))
        elif route.whole_body:
            return {}
        else:
            data = _query(scope["query_string"], route.list_fields)
            data.update(path_values)
            for name in route.request_params:
                data[name] = None
            kwargs = spec.from_mapping(data, strict=False)
        if route.request_params:
            request = Request(scope, _replay(body, receive) if route.body_args else receive)
            for name in route.request_params:
                kwargs[name] = request
        return kwargs

    async def _body(self, receive: Receive, content_length: bytes | None) -> bytes:
        limit = self.max_body_bytes
        if content_length is not None and content_length.isdigit() and int(content_length) > limit:
            raise BodyTooLarge
        message = await receive()
        if message["type"] != "http.request":
            raise ClientGone
        body: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            if len(body) > limit:
                raise BodyTooLarge
            return body
        chunks = [body]
        size = len(body)
        while True:
            message = await receive()
            if message["type"] != "http.request":
                raise ClientGone
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


def read_headers(scope: Scope) -> tuple[str, bytes | None, bytes]:
    """The request id (the client's ``X-Request-ID`` or a fresh one), Content-Length, Accept."""
    request_id = content_length = None
    accept = b""
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            request_id = value
        elif name == b"content-length":
            content_length = value
        elif name == b"accept":
            accept = value
    if request_id is None or not 0 < len(request_id) <= 200:
        return f"{_id_prefix}{next(_id_count):016x}", content_length, accept
    return request_id.decode("latin-1"), content_length, accept


def _query(query_string: bytes, list_fields: frozenset[str]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if not query_string:
        return data
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if key in list_fields:
            data.setdefault(key, []).append(value)
        else:
            data[key] = value  # a repeated scalar: the last one wins, as in Starlette
    return data


def _replay(body: bytes, receive: Receive) -> Callable[[], Awaitable[Message]]:
    """A ``receive`` that hands out the already-read body first, for a ``Request`` argument."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
