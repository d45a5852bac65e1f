"""How a load-balanced route's return value becomes an HTTP response.

* a Starlette ``Response`` passes through as it is (``X-Request-ID`` is added if it has none);
* ``bytes`` (or ``bytearray``/``memoryview``) → ``application/octet-stream``;
* a generator or async generator streams (below);
* anything else → JSON, encoded by orjson: dicts, lists, dataclasses, datetimes, UUIDs, enums
  and numpy arrays natively; msgspec Structs, sets, Decimals and bytes (base64) through msgspec;
  pydantic models through ``model_dump``; other array-likes (torch tensors, numpy scalars)
  through ``tolist()``. ``None`` is ``200 null``, as in the reference implementation (FastAPI).

Streaming. With ``Accept: text/event-stream`` every item is one Server-Sent Event,
``data: <item as JSON>``. Otherwise the first item decides the stream's type: ``bytes`` → raw
``application/octet-stream`` chunks, ``str`` → raw ``text/plain`` chunks (later bytes and str
items as they are, other items as JSON lines), anything else → newline-delimited JSON
(``application/x-ndjson``), one item per line. Sync generators advance in a worker thread.

A generator that fails before its first item gets an ordinary 500. Once items have gone out the
status is already 200, so a failure is logged and then reported in-band for SSE (an
``event: error`` whose data is the 500 body) and, for other streams, by dropping the connection:
the client sees a truncated chunked response (an error in every HTTP client) rather than a
stream that ends as if it were complete.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

import anyio
import anyio.to_thread
import msgspec
import orjson
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from ..protocol.wire import route_error

log = logging.getLogger("flash_runtime.worker.lb")

_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
_END = object()


class ResponseEncodingError(TypeError):
    """A route returned a value that cannot be encoded as JSON."""


def _default(value: Any) -> Any:
    """orjson's fallback for types it does not know."""
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump):  # pydantic v2
        return model_dump(mode="json")
    tolist = getattr(value, "tolist", None)
    if callable(tolist):  # numpy scalars, torch tensors, array-likes
        return tolist()
    return msgspec.to_builtins(value)  # Structs, sets, Decimal, bytes; TypeError otherwise


def encode_json(value: Any) -> bytes:
    """``value`` as JSON bytes (non-string dict keys are stringified if there are any)."""
    try:
        return orjson.dumps(value, default=_default, option=_JSON_OPTIONS)
    except TypeError:
        return orjson.dumps(value, default=_default, option=_JSON_OPTIONS | orjson.OPT_NON_STR_KEYS)


class JSONBytes(Response):
    """A JSON response whose body is already encoded; headers are built without a Mapping."""

    media_type = "application/json"

    def __init__(
        self,
        body: bytes,
        request_id: str,
        status_code: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status_code = status_code
        self.background = None
        self.body = body
        self.raw_headers = [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
            (b"x-request-id", request_id.encode("latin-1")),
        ]
        if headers:
            self.raw_headers.extend(
                (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()
            )


def error_response(
    status: int,
    error: str,
    message: str,
    request_id: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> Response:
    """The JSON error every non-2xx answer of the worker uses."""
    body = encode_json(route_error(error, message, request_id, **extra))
    return JSONBytes(body, request_id, status, headers)


async def send_result(
    result: Any,
    route: str,
    request_id: str,
    accept: bytes,
    scope: Scope,
    receive: Receive,
    send: Send,
) -> None:
    """Send a route function's return value as the response (see the module docstring)."""
    kind = type(result)
    if kind is dict or kind is list:
        response: Response = JSONBytes(_encode_result(result, route), request_id)
    elif isinstance(result, Response):
        await _pass_through(result, route, request_id, scope, receive, send)
        return
    elif isinstance(result, (bytes, bytearray, memoryview)):
        response = Response(
            bytes(result),
            media_type="application/octet-stream",
            headers={"x-request-id": request_id},
        )
    elif inspect.isgenerator(result) or inspect.isasyncgen(result):
        items = _items(result)
        try:
            first = await anext(items, _END)
        except BaseException:
            await items.aclose()
            raise
        response = ItemStream(
            items, first, sse=b"text/event-stream" in accept, route=route, request_id=request_id
        )
    else:
        response = JSONBytes(_encode_result(result, route), request_id)
    await response(scope, receive, send)


def _encode_result(result: Any, route: str) -> bytes:
    try:
        return encode_json(result)
    except TypeError as err:
        raise ResponseEncodingError(
            f"{route} returned {type(result).__name__}, which cannot be encoded as JSON ({err}); "
            "return JSON-able data, bytes, or a starlette Response"
        ) from err


async def _pass_through(
    response: Response, route: str, request_id: str, scope: Scope, receive: Receive, send: Send
) -> None:
    if "x-request-id" not in response.headers:
        response.headers["x-request-id"] = request_id
    started = False

    async def tracked(message: Any) -> None:
        nonlocal started
        started = True
        await send(message)

    try:
        await response(scope, receive, tracked)
    except Exception as exc:
        if not started:
            raise  # still time for a 500
        log.error(
            "request %s: %s: the returned %s failed while sending",
            request_id,
            route,
            type(response).__name__,
            exc_info=exc,
        )


async def _items(result: Any) -> AsyncGenerator[Any, None]:
    """The items of a generator or async generator, closing it however iteration ends."""
    if inspect.isasyncgen(result):
        try:
            async for item in result:
                yield item
        finally:
            with anyio.CancelScope(shield=True):
                await result.aclose()
        return
    try:
        while True:
            item = await anyio.to_thread.run_sync(next, result, _END)
            if item is _END:
                return
            yield item
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await anyio.to_thread.run_sync(result.close)
            except ValueError:  # still advancing in its thread: the client left mid-item
                pass


def _raw_chunk(item: Any) -> bytes:
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    if isinstance(item, str):
        return item.encode()
    return encode_json(item) + b"\n"


def _json_line(item: Any) -> bytes:
    return encode_json(item) + b"\n"


def _sse_event(item: Any) -> bytes:
    return b"data: " + encode_json(item) + b"\n\n"  # orjson escapes newlines: one data line


class ItemStream(StreamingResponse):
    """A generator's items as SSE events, NDJSON lines or raw chunks."""

    def __init__(
        self,
        items: AsyncGenerator[Any, None],
        first: Any,
        *,
        sse: bool,
        route: str,
        request_id: str,
    ) -> None:
        self.sse = sse
        self.failed = False
        self.route = route
        self.request_id = request_id
        headers = {"x-request-id": request_id}
        encode: Callable[[Any], bytes]
        if sse:
            media_type, encode = "text/event-stream", _sse_event
            headers.update({"cache-control": "no-cache", "x-accel-buffering": "no"})
        elif isinstance(first, (bytes, bytearray, memoryview)):
            media_type, encode = "application/octet-stream", _raw_chunk
        elif isinstance(first, str):
            media_type, encode = "text/plain; charset=utf-8", _raw_chunk
        else:
            media_type, encode = "application/x-ndjson", _json_line
        super().__init__(self._chunks(items, first, encode), media_type=media_type, headers=headers)

    async def _chunks(
        self, items: AsyncGenerator[Any, None], first: Any, encode: Callable[[Any], bytes]
    ) -> AsyncGenerator[bytes, None]:
        try:
            if first is not _END:
                yield encode(first)
                async for item in items:
                    yield encode(item)
        except Exception as exc:
            self.failed = True
            log.error(
                "request %s: %s failed while streaming: %s: %s",
                self.request_id,
                self.route,
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
            if self.sse:
                body = encode_json(route_error(type(exc).__name__, str(exc), self.request_id))
                yield b"event: error\ndata: " + body + b"\n\n"
        finally:
            with anyio.CancelScope(shield=True):
                await items.aclose()

    async def stream_response(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        async for chunk in self.body_iterator:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if self.failed and not self.sse:
            return  # an unfinished response: the server drops the connection
        await send({"type": "http.response.body", "body": b"", "more_body": False})
