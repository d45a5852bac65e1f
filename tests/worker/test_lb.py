"""The load-balanced router and worker lifecycle, in-process: real uvicorn on a loopback port."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from support import serve_asgi

from flash_runtime.errors import FlashError
from flash_runtime.manifest import FunctionEntry, Manifest, Resource
from flash_runtime.testing.net import free_port
from flash_runtime.worker._http import HeadWithBodyProtocol
from flash_runtime.worker.arguments import ArgSpec
from flash_runtime.worker.config import WorkerConfig
from flash_runtime.worker.lb import LBWorker, max_body_bytes
from flash_runtime.worker.loader import Callee, LoadedFunction, LoadedResource, kind_of
from flash_runtime.worker.router import Router

pytestmark = pytest.mark.anyio

MAX_BODY = 64 * 1024


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- the routes under test ------------------------------------------------------------------


class Point(msgspec.Struct):
    x: int
    y: int


@dataclasses.dataclass
class Pair:
    left: str
    right: str


async def add(a: int, b: int) -> dict[str, int]:
    return {"sum": a + b}


def add_sync(a: int, b: int) -> int:
    return a + b


async def get_item(item_id: int, q: str | None = None, limit: int = 10) -> dict[str, Any]:
    return {"item_id": item_id, "q": q, "limit": limit}


async def latest_item() -> str:
    return "latest"


async def tags(tag: list[str]) -> list[str]:
    return tag


async def put_item(item_id: int, name: str) -> dict[str, Any]:
    return {"item_id": item_id, "name": name}


async def delete_item(item_id: int) -> None:
    return None


async def with_request(request: Request, x: int = 0) -> dict[str, Any]:
    return {"path": request.url.path, "body": (await request.body()).decode(), "x": x}


async def extras(a: int, **kwargs: Any) -> dict[str, Any]:
    return {"a": a, "extra": kwargs}


async def crash() -> None:
    raise ValueError("boom")


def crash_sync() -> None:
    raise KeyError("missing")


async def http_error() -> None:
    raise HTTPException(status_code=409, detail="already there")


async def plain() -> PlainTextResponse:
    return PlainTextResponse("hi", status_code=201, headers={"x-custom": "1"})


async def raw() -> bytes:
    return b"\x00\x01\x02"


async def unencodable() -> object:
    return object()


async def rich() -> dict[Any, Any]:
    return {
        "point": Point(1, 2),
        "pair": Pair("l", "r"),
        "when": datetime.datetime(2024, 1, 2, 3, 4, 5),
        "set": {1},
        1: "non-str key",
    }


def numbers(n: int) -> Iterator[dict[str, int]]:
    for i in range(n):
        yield {"i": i}


async def anumbers(n: int) -> AsyncIterator[dict[str, int]]:
    for i in range(n):
        yield {"i": i}


def words() -> Iterator[str]:
    yield "hello "
    yield "world"


async def fails_midway() -> AsyncIterator[int]:
    yield 1
    raise RuntimeError("midway")


def fails_first() -> Iterator[int]:
    raise RuntimeError("before anything")
    yield 1  # a generator nonetheless


CLOSED = {"sync": threading.Event(), "async": threading.Event()}


def endless() -> Iterator[int]:
    try:
        i = 0
        while True:
            i += 1
            time.sleep(0.005)
            yield i
    finally:
        CLOSED["sync"].set()


async def aendless() -> AsyncIterator[int]:
    try:
        i = 0
        while True:
            i += 1
            await asyncio.sleep(0.005)
            yield i
    finally:
        CLOSED["async"].set()


ROUTES: dict[str, Callable[..., Any]] = {
    "POST /add": add,
    "POST /add_sync": add_sync,
    "GET /items/{item_id}": get_item,
    "GET /items/latest": latest_item,
    "PUT /items/{item_id}": put_item,
    "DELETE /items/{item_id}": delete_item,
    "GET /tags": tags,
    "POST /request/{x}": with_request,
    "POST /extras": extras,
    "POST /crash": crash,
    "GET /crash_sync": crash_sync,
    "GET /http_error": http_error,
    "GET /plain": plain,
    "GET /raw": raw,
    "GET /unencodable": unencodable,
    "GET /rich": rich,
    "GET /numbers": numbers,
    "GET /anumbers": anumbers,
    "GET /words": words,
    "GET /fails_midway": fails_midway,
    "GET /fails_first": fails_first,
    "GET /endless": endless,
    "GET /aendless": aendless,
}


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    router = Router.from_functions(ROUTES, max_body_bytes=MAX_BODY)
    with serve_asgi(router, http=HeadWithBodyProtocol) as url:  # the worker's own protocol
        yield url


@pytest.fixture
async def http(base_url: str) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url) as session:
        yield session


async def _json(response: aiohttp.ClientResponse) -> Any:
    return await response.json(content_type=None)


# -- arguments ------------------------------------------------------------------------------


async def test_json_body_arguments_and_request_id(http: aiohttp.ClientSession) -> None:
    async with http.post("/add", json={"a": 1, "b": 2}, headers={"X-Request-ID": "req-1"}) as r:
        assert r.status == 200
        assert r.content_type == "application/json"
        assert r.headers["X-Request-ID"] == "req-1"
        assert await _json(r) == {"sum": 3}
    async with http.post("/add_sync", json={"a": 1, "b": 2, "ignored": True}) as r:
        assert r.status == 200
        fresh = r.headers["X-Request-ID"]
        assert await _json(r) == 3
    async with http.post("/add", json={"a": 1, "b": 2}) as r:
        again = r.headers["X-Request-ID"]
    assert len(fresh) == len(again) == 32 and fresh != again
    assert int(fresh, 16) >= 0 and int(again, 16) >= 0  # hex digits


async def test_a_body_that_is_not_json_is_400(http: aiohttp.ClientSession) -> None:
    async with http.post("/add", data=b"{not json", headers={"X-Request-ID": "r400"}) as r:
        assert r.status == 400
        payload = await _json(r)
    assert payload["error"] == "MalformedBody" and payload["request_id"] == "r400"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"a": "x", "b": 1}', "a"),
        (b'{"a": 1}', "b"),
        (b'{"a": 1, "b": 2.5}', "b"),
        (b"[1, 2]", None),
    ],
)
async def test_invalid_body_is_422_naming_the_field(
    http: aiohttp.ClientSession, body: bytes, field: str | None
) -> None:
    async with http.post("/add", data=body, headers={"X-Request-ID": "r422"}) as r:
        assert r.status == 422
        payload = await _json(r)
    assert payload["error"] == "InvalidArguments"
    assert payload["field"] == field
    assert payload["request_id"] == "r422"
    assert payload["message"]


async def test_query_and_path_parameters(http: aiohttp.ClientSession) -> None:
    async with http.get("/items/5", params={"q": "x", "limit": "3"}) as r:
        assert await _json(r) == {"item_id": 5, "q": "x", "limit": 3}
    async with http.get("/items/5") as r:
        assert await _json(r) == {"item_id": 5, "q": None, "limit": 10}
    async with http.get("/items/latest") as r:  # a static path wins over {item_id}
        assert await _json(r) == "latest"
    async with http.delete("/items/latest") as r:  # ... unless it lacks the method
        assert r.status == 422
        assert (await _json(r))["field"] == "item_id"
    async with http.get("/items/abc") as r:
        assert r.status == 422
        assert (await _json(r))["field"] == "item_id"
    async with http.get("/items/5?limit=many") as r:
        assert r.status == 422
        assert (await _json(r))["field"] == "limit"


async def test_repeated_query_keys_make_a_list(http: aiohttp.ClientSession) -> None:
    async with http.get("/tags?tag=a&tag=b") as r:
        assert await _json(r) == ["a", "b"]
    async with http.get("/tags?tag=only") as r:
        assert await _json(r) == ["only"]
    async with http.get("/tags") as r:
        assert r.status == 422
        assert (await _json(r))["field"] == "tag"


async def test_body_methods_with_path_parameters(http: aiohttp.ClientSession) -> None:
    async with http.put("/items/7", json={"name": "n", "item_id": 99}) as r:  # the path wins
        assert await _json(r) == {"item_id": 7, "name": "n"}
    async with http.put("/items/7", json={"name": 5}) as r:  # body values keep JSON types
        assert r.status == 422
        assert (await _json(r))["field"] == "name"
    async with http.delete("/items/7") as r:
        assert r.status == 200
        assert await r.read() == b"null"


async def test_request_parameter_and_kwargs(http: aiohttp.ClientSession) -> None:
    async with http.post("/request/4", data=b"{}") as r:
        assert await _json(r) == {"path": "/request/4", "body": "{}", "x": 4}
    async with http.post("/extras", json={"a": 1, "b": [2]}) as r:
        assert await _json(r) == {"a": 1, "extra": {"b": [2]}}


# -- errors ---------------------------------------------------------------------------------


async def test_user_exception_is_500_and_the_worker_keeps_serving(
    http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="flash_runtime.worker.lb"):
        async with http.post("/crash", headers={"X-Request-ID": "boom-1"}) as r:
            assert r.status == 500
            assert await _json(r) == {
                "error": "ValueError",
                "message": "boom",
                "request_id": "boom-1",
            }
        async with http.get("/crash_sync") as r:
            assert r.status == 500
            assert (await _json(r))["error"] == "KeyError"
    assert "boom-1" in caplog.text
    assert "Traceback" in caplog.text
    async with http.post("/add", json={"a": 2, "b": 2}) as r:
        assert r.status == 200


async def test_http_exception_keeps_its_status(http: aiohttp.ClientSession) -> None:
    async with http.get("/http_error") as r:
        assert r.status == 409
        payload = await _json(r)
    assert payload["detail"] == "already there"


async def test_not_found_and_method_not_allowed(http: aiohttp.ClientSession) -> None:
    async with http.get("/nowhere") as r:
        assert r.status == 404
        payload = await _json(r)
    assert payload["error"] == "NotFound"
    assert "GET /nowhere" in payload["message"]
    assert "POST /add" in payload["message"]
    async with http.get("/add") as r:
        assert r.status == 405
        assert r.headers["Allow"] == "POST"
        assert (await _json(r))["error"] == "MethodNotAllowed"
    async with http.post("/items/1") as r:
        assert r.status == 405
        assert r.headers["Allow"] == "DELETE, GET, HEAD, PUT"
    async with http.post("/add/", json={"a": 1, "b": 1}) as r:  # trailing slash
        assert r.status == 200
    async with http.head("/items/1") as r:
        assert r.status == 200


async def test_oversized_body_is_413(http: aiohttp.ClientSession, base_url: str) -> None:
    big = b'{"a": 1, "b": 2, "pad": "' + b"x" * MAX_BODY + b'"}'
    async with http.post("/add", data=big) as r:
        assert r.status == 413
        assert (await _json(r))["error"] == "PayloadTooLarge"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
        yield b'{"pad": "'
        for _ in range(8):
            yield b"x" * (MAX_BODY // 4)
        yield b'"}'

    async with (
        aiohttp.ClientSession(base_url) as session,
        session.post("/add", data=chunks()) as r,
    ):
        assert r.status == 413


# -- return values --------------------------------------------------------------------------


async def test_response_objects_and_bytes(http: aiohttp.ClientSession) -> None:
    async with http.get("/plain", headers={"X-Request-ID": "p"}) as r:
        assert r.status == 201
        assert r.headers["x-custom"] == "1"
        assert r.headers["X-Request-ID"] == "p"
        assert await r.text() == "hi"
    async with http.get("/raw") as r:
        assert r.content_type == "application/octet-stream"
        assert await r.read() == b"\x00\x01\x02"


async def test_rich_values_encode_as_json(http: aiohttp.ClientSession) -> None:
    async with http.get("/rich") as r:
        assert await _json(r) == {
            "point": {"x": 1, "y": 2},
            "pair": {"left": "l", "right": "r"},
            "when": "2024-01-02T03:04:05",
            "set": [1],
            "1": "non-str key",
        }
    async with http.get("/unencodable") as r:
        assert r.status == 500
        assert (await _json(r))["error"] == "ResponseEncodingError"


@pytest.mark.parametrize("path", ["/numbers", "/anumbers"])
async def test_generators_stream_ndjson_or_sse(http: aiohttp.ClientSession, path: str) -> None:
    async with http.get(path, params={"n": "3"}) as r:
        assert r.content_type == "application/x-ndjson"
        assert await r.read() == b'{"i":0}\n{"i":1}\n{"i":2}\n'
    async with http.get(path, params={"n": "2"}, headers={"Accept": "text/event-stream"}) as r:
        assert r.content_type == "text/event-stream"
        assert await r.read() == b'data: {"i":0}\n\ndata: {"i":1}\n\n'


async def test_string_chunks_stream_raw(http: aiohttp.ClientSession) -> None:
    async with http.get("/words") as r:
        assert r.content_type == "text/plain"
        assert await r.text() == "hello world"


async def test_stream_failures(http: aiohttp.ClientSession) -> None:
    async with http.get("/fails_first") as r:  # nothing sent yet: an ordinary 500
        assert r.status == 500
        assert (await _json(r))["message"] == "before anything"
    sse = {"Accept": "text/event-stream", "X-Request-ID": "s1"}
    async with http.get("/fails_midway", headers=sse) as r:
        body = await r.read()
    assert body.startswith(b"data: 1\n\nevent: error\ndata: ")
    assert b'"message":"midway"' in body and b'"request_id":"s1"' in body
    with pytest.raises(aiohttp.ClientPayloadError):  # NDJSON: the stream is cut, not ended
        async with http.get("/fails_midway") as r:
            await r.read()
    async with http.get("/ping") as r:
        assert await _json(r) == {"status": "healthy"}


@pytest.mark.parametrize(("path", "kind"), [("/endless", "sync"), ("/aendless", "async")])
async def test_client_leaving_closes_the_generator(
    http: aiohttp.ClientSession, path: str, kind: str
) -> None:
    async with http.get(path) as r:
        assert await r.content.readline() == b"1\n"
    assert await asyncio.to_thread(CLOSED[kind].wait, 10)


# -- the worker lifecycle -------------------------------------------------------------------


def _loaded(functions: dict[str, Any]) -> LoadedResource:
    loaded = []
    for key, func in functions.items():
        method, _, path = key.partition(" ")
        entry = FunctionEntry(
            name=func.__name__,
            module="app",
            is_async=True,
            is_class=False,
            http_method=method,
            http_path=path,
        )
        callee = Callee(func.__name__, func, kind_of(func), ArgSpec(func))
        loaded.append(LoadedFunction(entry, func, callee=callee))
    resource = Resource(
        resource_type="LoadBalancerSlsResource",
        file_path="app.py",
        module_path="app",
        functions=[f.entry for f in loaded],
        is_load_balanced=True,
    )
    manifest = Manifest(
        version="1.0",
        python_version="3.11",
        generated_at="now",
        project_name="t",
        resources={"api": resource},
        function_registry={},
    )
    return LoadedResource("api", manifest, resource, Path("."), loaded)


async def test_worker_answers_ping_while_loading_then_routes() -> None:
    release = threading.Event()

    def prepare() -> LoadedResource:
        release.wait(10)
        return _loaded({"POST /add": add})

    port, health = free_port(), free_port()
    worker = LBWorker(WorkerConfig(host="127.0.0.1", port=port, port_health=health), prepare)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(worker.run()), daemon=True)
    thread.start()
    try:
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            status = None
            for _ in range(200):  # until the server is up
                try:
                    async with http.get("/ping") as r:
                        status = r.status
                        break
                except aiohttp.ClientConnectionError:
                    threading.Event().wait(0.02)
            assert status == 204
            async with http.post("/add", json={"a": 1, "b": 2}) as r:
                assert r.status == 503
                assert (await _json(r))["error"] == "Initialising"
            async with http.get(f"http://127.0.0.1:{health}/ping") as r:
                assert r.status == 204
            release.set()
            assert worker.ready.wait(10)
            async with http.get("/ping") as r:
                assert r.status == 200
                assert await _json(r) == {"status": "healthy"}
            async with http.post("/add", json={"a": 1, "b": 2}) as r:
                assert await _json(r) == {"sum": 3}
            async with http.get(f"http://127.0.0.1:{health}/ping") as r:
                assert r.status == 200
            async with http.post(f"http://127.0.0.1:{health}/add", json={"a": 1, "b": 2}) as r:
                assert r.status == 404
    finally:
        release.set()
        worker.stop()
        thread.join(10)
    assert result == [0]


def test_worker_exits_1_when_loading_fails(caplog: pytest.LogCaptureFixture) -> None:
    def prepare() -> LoadedResource:
        raise FlashError("the manifest is broken")

    worker = LBWorker(WorkerConfig(host="127.0.0.1", port=free_port()), prepare)
    with caplog.at_level(logging.ERROR, logger="flash_runtime.worker.lb"):
        assert worker.run() == 1
    assert "worker cannot start: the manifest is broken" in caplog.text


def test_worker_exits_1_when_the_port_is_taken() -> None:
    port = free_port()
    worker = LBWorker(WorkerConfig(host="127.0.0.1", port=port), lambda: _loaded({}))
    import socket

    with socket.create_server(("127.0.0.1", port)):
        assert worker.run() == 1


def test_max_body_setting() -> None:
    assert max_body_bytes({}) == 20 * 1024 * 1024
    assert max_body_bytes({"FLASH_MAX_BODY_MB": "0.5"}) == 512 * 1024
    with pytest.raises(FlashError, match="FLASH_MAX_BODY_MB"):
        max_body_bytes({"FLASH_MAX_BODY_MB": "lots"})
