"""Load-balanced workers end to end: fixture apps built into real artifacts, served by the real
bootstrap (``python -m flash_runtime.bootstrap``) and called over HTTP."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import build_app

from flash_runtime.testing.net import free_port
from flash_runtime.testing.workers import WorkerProcess, start_worker

pytestmark = pytest.mark.anyio

StartWorker = Callable[..., WorkerProcess]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def lb_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartWorker]:
    """``lb_worker(app, **env)``: build ``tests/apps/<app>`` and start its worker, once per
    module (the worker is shared by the module's tests and stopped at the end)."""
    started: dict[str, WorkerProcess] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLASH_HOME", str(tmp_path_factory.getbasetemp() / "flash_home"))
        mp.delenv("FLASH_RESOURCE_NAME", raising=False)

        def start(app: str, resource: str | None = None, **env: str) -> WorkerProcess:
            key = f"{app}/{resource}/{sorted(env.items())}"
            if key not in started:
                root = tmp_path_factory.mktemp(app)
                artifact = build_app(app, root)
                started[key] = start_worker(
                    artifact,
                    root / "app",
                    resource or app,
                    port=free_port(),
                    extra_env={"FLASH_ENDPOINT_TYPE": "lb", **env},
                )
            return started[key]

        yield start
    for worker in started.values():  # all at once: each takes a moment to shut down
        if worker.proc.poll() is None:
            worker.proc.send_signal(signal.SIGTERM)
    for worker in started.values():
        worker.stop()


async def _ready(worker: WorkerProcess, timeout: float = 30) -> list[int]:
    """Poll ``GET /ping`` until 200; returns every status seen on the way."""
    seen: list[int] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    async with aiohttp.ClientSession() as http:
        while loop.time() < deadline:
            if worker.proc.poll() is not None:
                pytest.fail(f"worker exited {worker.proc.returncode}:\n{worker.log()}")
            try:
                async with http.get(f"{worker.url}/ping") as r:
                    seen.append(r.status)
                    if r.status == 200:
                        assert await r.json() == {"status": "healthy"}
                        return seen
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.02)
    pytest.fail(f"worker not ready after {timeout}s:\n{worker.log()}")


@pytest.fixture
async def typed(lb_worker: StartWorker) -> AsyncIterator[aiohttp.ClientSession]:
    worker = lb_worker("lb_typed", FLASH_MAX_BODY_MB="0.05")
    await _ready(worker)
    async with aiohttp.ClientSession(worker.url) as http:
        yield http


async def _json(response: aiohttp.ClientResponse) -> Any:
    return await response.json(content_type=None)


async def test_every_route_type(typed: aiohttp.ClientSession) -> None:
    async with typed.post("/add", json={"a": 2, "b": 3}, headers={"X-Request-ID": "e2e"}) as r:
        assert r.status == 200
        assert r.headers["X-Request-ID"] == "e2e"
        assert await _json(r) == {"sum": 5}
    async with typed.post("/multiply", json={"a": 1.5}) as r:  # a sync def, default argument
        assert await _json(r) == 3.0
    async with typed.get("/items/7?q=blue&limit=2") as r:
        assert await _json(r) == {"item_id": 7, "q": "blue", "limit": 2}
    async with typed.get("/search?tag=a&tag=b&exact=true") as r:
        assert await _json(r) == {"tag": ["a", "b"], "exact": True}
    async with typed.put("/items/7", json={"name": "lamp", "price": 9.5}) as r:
        assert await _json(r) == {"item_id": 7, "name": "lamp", "price": 9.5}
    async with typed.patch("/items/7", json={"name": "desk"}) as r:
        assert await _json(r) == {"item_id": 7, "patched": {"name": "desk"}}
    async with typed.delete("/items/7") as r:
        assert r.status == 200
        assert await _json(r) is None


async def test_invalid_arguments_name_the_field(typed: aiohttp.ClientSession) -> None:
    cases = [
        typed.post("/add", json={"a": "two", "b": 3}),
        typed.post("/add", json={"a": 2}),
        typed.get("/items/seven"),
        typed.get("/items/7?limit=lots"),
        typed.put("/items/7", json={"name": "lamp", "price": "cheap"}),
    ]
    fields = []
    for call in cases:
        async with call as r:
            assert r.status == 422
            payload = await _json(r)
            assert payload["error"] == "InvalidArguments"
            assert payload["request_id"] == r.headers["X-Request-ID"]
            fields.append(payload["field"])
    assert fields == ["a", "b", "item_id", "limit", "price"]


async def test_not_found_method_not_allowed_and_too_large(typed: aiohttp.ClientSession) -> None:
    async with typed.get("/nope") as r:
        assert r.status == 404
        payload = await _json(r)
        assert payload["error"] == "NotFound"
        assert "POST /add" in payload["message"]
    async with typed.get("/add") as r:
        assert r.status == 405
        assert r.headers["Allow"] == "POST"
        assert (await _json(r))["error"] == "MethodNotAllowed"
    big = {"a": 1, "b": 2, "pad": "x" * 60_000}  # FLASH_MAX_BODY_MB=0.05 is 52,428 bytes
    async with typed.post("/add", json=big) as r:
        assert r.status == 413
        assert (await _json(r))["error"] == "PayloadTooLarge"
    async with typed.post("/add", json={"a": 1, "b": 1}) as r:  # same connection, still fine
        assert await _json(r) == {"sum": 2}


async def test_user_exception_is_500_and_the_worker_keeps_serving(
    lb_worker: StartWorker,
) -> None:
    worker = lb_worker("lb_crash")
    await _ready(worker)
    async with aiohttp.ClientSession(worker.url) as http:
        for attempt in range(2):
            rid = f"crash-{attempt}"
            async with http.post(
                "/crash", json={"reason": "no"}, headers={"X-Request-ID": rid}
            ) as r:
                assert r.status == 500
                assert await _json(r) == {"error": "ValueError", "message": "no", "request_id": rid}
            async with http.get("/ok") as r:
                assert await _json(r) == {"ok": True}
    log = worker.log()
    assert "crash-0" in log and "crash-1" in log
    assert "Traceback" in log and "ValueError: no" in log
    assert worker.proc.poll() is None


async def test_streams(lb_worker: StartWorker) -> None:
    worker = lb_worker("lb_stream")
    await _ready(worker)
    sse = {"Accept": "text/event-stream"}
    async with aiohttp.ClientSession(worker.url) as http:
        async with http.get("/count?n=3") as r:
            assert r.content_type == "application/x-ndjson"
            assert await r.read() == b'{"i":0}\n{"i":1}\n{"i":2}\n'
        async with http.get("/count?n=2", headers=sse) as r:
            assert r.content_type == "text/event-stream"
            assert await r.read() == b'data: {"i":0}\n\ndata: {"i":1}\n\n'
        async with http.post("/tokens", json={"prompt": "to be"}, headers=sse) as r:
            events = [line async for line in r.content if line.strip()]
            assert events == [b'data: {"token":"to"}\n', b'data: {"token":"be"}\n']
        async with http.post("/tokens", json={"prompt": "or not"}) as r:
            assert await r.read() == b'{"token":"or"}\n{"token":"not"}\n'
        async with http.get("/text") as r:
            assert r.content_type == "text/plain"
            assert await r.text() == "hello world"
        async with http.get("/broken", headers={**sse, "X-Request-ID": "br"}) as r:
            body = await r.read()
            assert body.startswith(b'data: {"i":0}\n\nevent: error\ndata: ')
            assert b'"message":"stream broke"' in body and b'"request_id":"br"' in body
        with pytest.raises(aiohttp.ClientPayloadError):
            async with http.get("/broken") as r:
                await r.read()
        async with http.get("/count?n=1") as r:
            assert r.status == 200


async def test_response_objects_and_bytes(lb_worker: StartWorker) -> None:
    worker = lb_worker("lb_responses")
    await _ready(worker)
    async with aiohttp.ClientSession(worker.url) as http:
        async with http.get("/teapot") as r:
            assert r.status == 418
            assert r.headers["x-brewed"] == "yes"
            assert "X-Request-ID" in r.headers
            assert await r.text() == "short and stout"
        async with http.get("/blob?size=5") as r:
            assert r.content_type == "application/octet-stream"
            assert await r.read() == bytes(range(5))


@pytest.mark.parametrize("endpoint_type", ["lb", ""], ids=["type-given", "type-from-manifest"])
async def test_ping_is_204_while_user_code_loads(
    lb_worker: StartWorker, endpoint_type: str
) -> None:
    # The module sleeps 2 s at import; the worker listens first whether or not the platform
    # says FLASH_ENDPOINT_TYPE=lb (without it, the bootstrap reads the manifest first).
    worker = lb_worker("lb_slow_import", FLASH_ENDPOINT_TYPE=endpoint_type)
    async with aiohttp.ClientSession(worker.url) as http:
        for _ in range(500):
            try:
                async with http.get("/ping") as r:
                    if r.status == 204:
                        break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.02)
        else:
            pytest.fail(f"/ping never answered 204:\n{worker.log()}")
        async with http.get("/hello") as r:  # the routes wait for user code
            assert r.status == 503
            assert (await _json(r))["error"] == "Initialising"
        seen = await _ready(worker)
        assert set(seen) <= {204, 200}
        async with http.get("/hello") as r:
            assert await _json(r) == {"hello": "world"}


async def test_sigterm_finishes_the_request_in_flight(
    lb_worker: StartWorker, tmp_path: Path
) -> None:
    worker = lb_worker("lb_slow_request")
    await _ready(worker)
    marker = tmp_path / "running"
    async with aiohttp.ClientSession(worker.url) as http:

        async def slow() -> tuple[int, Any]:
            async with http.post("/slow", json={"marker": str(marker), "seconds": 1.5}) as r:
                return r.status, await _json(r)

        call = asyncio.create_task(slow())
        while not marker.exists():
            if call.done():
                pytest.fail(f"the slow request ended early: {call.result()}\n{worker.log()}")
            await asyncio.sleep(0.01)
        worker.proc.send_signal(signal.SIGTERM)
        assert await call == (200, {"slept": 1.5})
    assert await asyncio.to_thread(worker.wait_exit, 10) == 0
    assert "finishing 1 request(s) in flight" in worker.log()


async def test_failed_loading_exits_1(lb_worker: StartWorker) -> None:
    worker = lb_worker("lb_crash", resource="no_such_resource")
    code = await asyncio.to_thread(worker.wait_exit, 20)
    assert code == 1
    assert "worker cannot start" in worker.log()
    assert "no_such_resource" in worker.log()
