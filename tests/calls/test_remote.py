"""The cross-endpoint client against a scripted peer: an aiohttp server that plays Runpod's
control plane (discovery) and a target endpoint whose answers each test chooses, to reach the
cases the local platform does not produce on demand (a 502 before a job is accepted, a dropped
connection after it was sent). Also: when calls leave the process, argument mapping, class
endpoints seen from elsewhere, and the packer's ``makes_remote_calls``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from support import check_request, schemas

from flash_runtime import ConfigurationError, Endpoint, RemoteCallError
from flash_runtime.calls import client as client_mod
from flash_runtime.calls.client import RemoteClient, arguments
from flash_runtime.endpoint import RemoteClass, endpoint_of, unwrap
from flash_runtime.pack.assemble import makes_remote_calls
from flash_runtime.pack.discover import Discovered, Function
from flash_runtime.testing.net import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MANIFEST = {
    "version": "1.0",
    "python_version": "3.11",
    "generated_at": "2026-01-01T00:00:00Z",
    "project_name": "peer",
    "resources": {
        "worker": {
            "resource_type": "CpuServerlessEndpoint",
            "file_path": "w.py",
            "module_path": "w",
            "functions": [{"name": "work", "module": "w", "is_async": True, "is_class": False}],
            "is_load_balanced": False,
        },
        "api": {
            "resource_type": "CpuLoadBalancerSlsResource",
            "file_path": "a.py",
            "module_path": "a",
            "is_load_balanced": True,
            "functions": [
                {
                    "name": "create",
                    "module": "a",
                    "is_async": False,
                    "is_class": False,
                    "http_method": "POST",
                    "http_path": "/items",
                },
                {
                    "name": "item",
                    "module": "a",
                    "is_async": False,
                    "is_class": False,
                    "http_method": "GET",
                    "http_path": "/items/{item_id}",
                },
            ],
        },
    },
    "function_registry": {"work": "worker", "create": "api", "item": "api"},
    "routes": {"api": {"POST /items": "create", "GET /items/{item_id}": "item"}},
}


async def work(text: str, times: int = 1) -> str:
    """Stands for the peer's queue-based function."""
    raise AssertionError("runs remotely")


def create(name: str, tags: list[str]) -> dict[str, Any]:
    raise AssertionError("runs remotely")


def item(item_id: int, full: bool = False, fields: list[str] | None = None) -> dict[str, Any]:
    raise AssertionError("runs remotely")


@dataclass
class Peer:
    """The scripted peer: ``answers[path]`` are handlers used in turn (the last one repeats)."""

    url: str = ""
    answers: dict[str, list[Handler]] = field(default_factory=dict)
    seen: list[tuple[str, str, Any]] = field(default_factory=list)  # (method, path_qs, body)

    def count(self, path: str) -> int:
        return sum(1 for _, p, _ in self.seen if p.split("?")[0] == path)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body: Any = json.loads(raw) if raw else None
        self.seen.append((request.method, request.raw_path, body))
        if request.path == "/graphql":
            return self.graphql(body)
        if request.headers.get("Authorization") != "Bearer rpa_key":
            return web.json_response({"error": "unauthorized"}, status=401)
        path = request.raw_path.split("?")[0]
        handlers = self.answers.get(path) or [_json(404, {"error": "not found"})]
        handler = handlers.pop(0) if len(handlers) > 1 else handlers[0]
        return await handler(request)

    def graphql(self, body: dict[str, Any]) -> web.Response:
        query = body["query"]
        # Discovery asks Runpod only what Runpod's API has (tests/runpod_schema.graphql).
        check_request(schemas()["runpod"], query, body["variables"])
        if "discoverFlashApp" in query:
            assert body["variables"] == {"flashAppName": "peer"}
            envs = [{"id": "env1", "name": "production", "activeBuildId": "b1"}]
            return web.json_response(
                {"data": {"flashAppByName": {"id": "a", "flashEnvironments": envs}}}
            )
        manifest = dict(MANIFEST)
        manifest["resources_endpoints"] = {"worker": f"{self.url}/v2/w1", "api": f"{self.url}/lb"}
        return web.json_response({"data": {"flashBuild": {"id": "b1", "manifest": manifest}}})


def _json(status: int, body: Any) -> Handler:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.json_response(body, status=status)

    return answer


async def _drop(request: web.Request) -> web.StreamResponse:
    """The request arrived, then the connection was lost: it may have run."""
    assert request.transport is not None
    request.transport.close()
    return web.Response()


@pytest.fixture
def peer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Peer]:
    """The peer on its own event loop and thread, on a free port."""
    state = Peer(url=f"http://127.0.0.1:{free_port()}")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> web.AppRunner:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", state.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", int(state.url.rsplit(":", 1)[1])).start()
        return runner

    runner = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    manifest = tmp_path / "flash_manifest.json"
    manifest.write_text(json.dumps(MANIFEST))
    # A script on a laptop, calling an app deployed to "Runpod" (this peer).
    monkeypatch.delenv("FLASH_RESOURCE_NAME", raising=False)
    monkeypatch.setenv("FLASH_MANIFEST_PATH", str(manifest))
    monkeypatch.setenv("FLASH_PLATFORM", "runpod")
    monkeypatch.setenv("RUNPOD_API_KEY", "rpa_key")
    monkeypatch.setenv("RUNPOD_API_BASE_URL", state.url)
    monkeypatch.setattr(client_mod, "BACKOFF_S", (0.01, 0.01, 0.01))
    try:
        yield state
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def run_work(client: RemoteClient, *args: Any, **kwargs: Any) -> Awaitable[Any]:
    return client.call("worker", "work", work, args, kwargs)


def test_a_job_is_submitted_with_named_arguments_and_polled_until_done(peer: Peer) -> None:
    async def main() -> None:
        peer.answers["/v2/w1/runsync"] = [_json(200, {"id": "j1", "status": "IN_QUEUE"})]
        peer.answers["/v2/w1/status/j1"] = [
            _json(200, {"id": "j1", "status": "IN_PROGRESS"}),
            _json(200, {"id": "j1", "status": "COMPLETED", "output": "done"}),
        ]
        client = RemoteClient()
        assert await run_work(client, "hi", times=2) == "done"
        submitted = [s for s in peer.seen if s[1].startswith("/v2/w1/runsync")]
        assert [body for _, _, body in submitted] == [{"input": {"text": "hi", "times": 2}}]
        assert peer.count("/v2/w1/status/j1") == 2
        await client.close()

    asyncio.run(main())


def test_only_what_cannot_have_run_is_sent_again(peer: Peer) -> None:
    async def main() -> None:
        client = RemoteClient()
        # 503 and 502 before the job was accepted: sent again.
        peer.answers["/v2/w1/runsync"] = [
            _json(503, {"error": "busy"}),
            _json(502, {"error": "bad gateway"}),
            _json(200, {"id": "j2", "status": "COMPLETED", "output": 7}),
        ]
        assert await run_work(client, "x") == 7
        assert peer.count("/v2/w1/runsync") == 3

        # Sent, then the connection was lost: it may have run, so it is not sent again.
        peer.answers["/v2/w1/runsync"] = [_drop]
        with pytest.raises(RemoteCallError, match="not sent again") as info:
            await run_work(client, "x")
        assert (info.value.endpoint, info.value.cause) == ("worker", "unavailable")
        assert peer.count("/v2/w1/runsync") == 4

        # Accepted, then its status could not be read for a while: polled, never resubmitted.
        peer.answers["/v2/w1/runsync"] = [_json(200, {"id": "j3", "status": "IN_PROGRESS"})]
        peer.answers["/v2/w1/status/j3"] = [
            _json(503, {"error": "busy"}),
            _json(200, {"id": "j3", "status": "COMPLETED", "output": "late"}),
        ]
        assert await run_work(client, "x") == "late"
        assert peer.count("/v2/w1/status/j3") == 2
        assert peer.count("/v2/w1/runsync") == 5
        await client.close()

    asyncio.run(main())


def test_failures_name_the_target_and_the_cause(peer: Peer) -> None:
    async def main() -> None:
        client = RemoteClient(call_timeout=0.3)
        error = {
            "error_type": "<class 'ValueError'>",
            "error_message": "bad input",
            "error_traceback": "Traceback ...",
        }
        peer.answers["/v2/w1/runsync"] = [
            _json(200, {"id": "j4", "status": "FAILED", "error": json.dumps(error)})
        ]
        with pytest.raises(RemoteCallError) as info:
            await run_work(client, "x")
        assert (info.value.cause, info.value.remote_type, info.value.remote_message) == (
            "remote_error",
            "ValueError",
            "bad input",
        )
        assert (
            str(info.value)
            == "call to endpoint 'worker' failed (remote_error): ValueError: bad input"
        )

        peer.answers["/v2/w1/runsync"] = [_json(200, {"id": "j5", "status": "IN_PROGRESS"})]
        peer.answers["/v2/w1/status/j5"] = [_json(200, {"id": "j5", "status": "IN_PROGRESS"})]
        peer.answers["/v2/w1/cancel/j5"] = [_json(200, {"id": "j5", "status": "CANCELLED"})]
        with pytest.raises(RemoteCallError) as info:
            await run_work(client, "x")
        assert info.value.cause == "timeout" and peer.count("/v2/w1/cancel/j5") == 1

        peer.answers["/v2/w1/runsync"] = [_json(200, {"id": "j6", "status": "TIMED_OUT"})]
        with pytest.raises(RemoteCallError, match="execution timeout") as info:
            await run_work(client, "x")
        assert info.value.cause == "timeout"

        peer.answers["/v2/w1/runsync"] = [_json(404, {"error": "endpoint 'w1' not found"})]
        with pytest.raises(RemoteCallError, match="answered 404") as info:
            await run_work(client, "x")
        assert info.value.cause == "not_deployed"

        with pytest.raises(RemoteCallError, match="not in the manifest") as info:
            await client.call("worker", "nope", work, ("x",), {})
        assert info.value.cause == "not_deployed"
        await client.close()

    asyncio.run(main())


def test_a_wrong_key_is_unauthorized(peer: Peer, monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        peer.answers["/v2/w1/runsync"] = [_json(401, {"error": "unauthorized"})]
        client = RemoteClient()
        with pytest.raises(RemoteCallError, match="refused the API key") as info:
            await run_work(client, "x")
        assert info.value.cause == "unauthorized"
        await client.close()

    asyncio.run(main())


def test_a_refused_connection_is_retried_after_looking_the_url_up_again(peer: Peer) -> None:
    async def main() -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = f"http://127.0.0.1:{s.getsockname()[1]}"
        client = RemoteClient()
        discovery_calls = len([s for s in peer.seen if s[1] == "/graphql"])
        peer_url, peer.url = peer.url, closed  # discovery now reports a URL nobody listens on
        with pytest.raises(RemoteCallError, match="cannot connect") as info:
            await run_work(client, "x")
        peer.url = peer_url
        assert info.value.cause == "unavailable" and "(5 attempts)" in str(info.value)
        # Looked up once, and once more after the first refusal (the endpoint may have moved).
        assert len([s for s in peer.seen if s[1] == "/graphql"]) - discovery_calls == 4
        await client.close()

    asyncio.run(main())


def test_load_balanced_targets_get_their_route(peer: Peer) -> None:
    async def main() -> None:
        async def echo(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            body: Any = json.loads(raw) if raw else None
            return web.json_response({"path": request.raw_path, "body": body})

        peer.answers["/lb/items"] = [_json(503, {"error": "no worker ready"}), echo]
        peer.answers["/lb/items/a%2Fb"] = [echo]
        client = RemoteClient()
        created = await client.call("api", "create", create, ("n",), {"tags": ["x"]})
        assert created == {"path": "/lb/items", "body": {"name": "n", "tags": ["x"]}}
        assert peer.count("/lb/items") == 2  # the 503 came from the balancer: sent again
        got = await client.call("api", "item", item, ("a/b",), {"full": True, "fields": ["p", "q"]})
        assert got == {"path": "/lb/items/a%2Fb?full=true&fields=p&fields=q", "body": None}

        # A 502 from a load balancer may come after the worker ran the request: not sent again.
        peer.answers["/lb/items"] = [_json(502, {"error": "worker failed"}), echo]
        with pytest.raises(RemoteCallError, match="HTTP 502"):
            await client.call("api", "create", create, ("n", []), {})
        assert peer.count("/lb/items") == 3

        peer.answers["/lb/items"] = [_json(500, {"error": "KeyError", "message": "'x'"})]
        with pytest.raises(RemoteCallError) as info:
            await client.call("api", "create", create, ("n", []), {})
        assert (info.value.cause, info.value.remote_type) == ("remote_error", "KeyError")
        await client.close()

    asyncio.run(main())


def test_one_session_per_event_loop_closed_with_it(peer: Peer) -> None:
    client = RemoteClient()

    async def sessions() -> tuple[Any, Any]:
        return await client.session(), await client.session()

    first, again = asyncio.run(sessions())
    assert first is again and first.closed  # asyncio.run closed it with its loop
    second, _ = asyncio.run(sessions())
    assert second is not first and second.closed


# Where calls run


def test_where_calls_run_and_what_kind_of_call_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    """A script calls the deployed app unless FLASH_CALLS=local; a call from outside the
    function's own endpoint returns an awaitable in every mode (so `await tokenize(x)` on a
    plain def works wherever the caller runs); within the endpoint the call is native."""

    @Endpoint("cr-sync")
    def double(x: int) -> int:
        return 2 * x

    @Endpoint("cr-async")
    async def triple(x: int) -> int:
        return 3 * x

    @Endpoint("cr-caller")
    async def caller(x: int) -> list[int]:
        return [await double(x), await triple(x)]

    api = Endpoint("cr-api")

    @api.get("/half")
    def half(x: int) -> float:
        return x / 2

    @api.get("/both")
    def both(x: int) -> list[float]:
        return [half(x), half(x + 1)]  # the same endpoint: native calls

    pending = double(2)  # a script, as `python worker.py`: the deployed app, so an awaitable
    assert asyncio.iscoroutine(pending)
    pending.close()
    monkeypatch.setenv("FLASH_CALLS", "remote")
    pending = double(2)
    assert asyncio.iscoroutine(pending)
    pending.close()

    monkeypatch.setenv("FLASH_CALLS", "local")
    assert asyncio.run(double(2)) == 4 and asyncio.run(triple(2)) == 6
    assert asyncio.run(caller(5)) == [10, 15]  # another endpoint's plain def, awaited
    assert asyncio.run(both(3)) == [1.5, 2.0]

    monkeypatch.delenv("FLASH_CALLS")
    monkeypatch.setenv("FLASH_RESOURCE_NAME", "cr-sync")  # a worker: its own endpoint is native
    assert double(2) == 4
    monkeypatch.setenv("FLASH_RESOURCE_NAME", "cr-api")
    assert both(3) == [1.5, 2.0]
    monkeypatch.delenv("FLASH_RESOURCE_NAME")
    monkeypatch.setenv("FLASH_CALLS", "remotely")
    with pytest.raises(ConfigurationError, match="FLASH_CALLS='remotely'"):
        double(2)


def test_a_class_endpoint_seen_from_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASH_RESOURCE_NAME", "somewhere-else")
    ep = Endpoint("cr-class")

    class Model:
        def __init__(self) -> None:
            raise AssertionError("instantiated on its own workers only")

        async def predict(self, x: int) -> int:
            return x

        def _private(self) -> None: ...

    remote = ep(Model)
    assert isinstance(remote, RemoteClass) and unwrap(remote) is Model
    assert endpoint_of(remote) is ep and remote.__name__ == "Model"
    handle = remote()
    assert handle.predict.__name__ == "predict"
    with pytest.raises(AttributeError, match="no public method '_private'"):
        handle._private  # noqa: B018
    with pytest.raises(TypeError, match="without arguments"):
        remote(1)
    monkeypatch.setenv("FLASH_RESOURCE_NAME", "cr-class2")
    own = Endpoint("cr-class2")

    class Local:
        pass

    assert own(Local) is Local


def test_positional_arguments_are_named_from_the_signature() -> None:
    def f(a: int, b: int = 2, *args: int, c: int = 3, **extra: Any) -> None: ...

    assert arguments(f, (1,), {}, method=False) == {"a": 1}  # defaults are the target's
    assert arguments(f, (1, 5), {"c": 4, "z": 0}, method=False) == {"a": 1, "b": 5, "c": 4, "z": 0}
    with pytest.raises(TypeError, match=r"\*args cannot be sent"):
        arguments(f, (1, 2, 3), {}, method=False)
    with pytest.raises(TypeError, match=r"f\(\): missing a required argument: 'a'"):
        arguments(f, (), {}, method=False)

    def m(self: Any, x: int) -> None: ...

    assert arguments(m, (4,), {}, method=True) == {"x": 4}


def test_importing_the_sdk_does_not_load_the_client() -> None:
    code = (
        "import sys, runpod_flash, flash_runtime.endpoint, flash_runtime.worker.loader; "
        "print(sorted(m for m in sys.modules if m.startswith(('flash_runtime.calls', 'aiohttp'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# The packer's makes_remote_calls


def _endpoint(name: str, *functions: tuple[str, str]) -> Discovered:
    return Discovered(
        name=name,
        kind="qb",
        is_gpu=False,
        has_image=False,
        where=f"{functions[0][1]}:1",
        max_concurrency=1,
        dependencies=[],
        deploy_config={},
        functions=[
            Function(fn, file.removesuffix(".py").replace("/", "."), file, 1, True, False, False)
            for fn, file in functions
        ],
    )


def test_makes_remote_calls_follows_project_imports() -> None:
    endpoints = [
        _endpoint("api", ("handle", "api.py")),
        _endpoint("gpu", ("compute", "gpu.py")),
        _endpoint("both", ("first", "both.py"), ("second", "both.py")),
        _endpoint("pkg", ("run", "pkg/entry.py")),
        _endpoint("alone", ("solo", "alone.py")),
    ]
    sources = {
        # A route calls the GPU function through a helper module of the project.
        "api.py": "import services\nasync def handle():\n    return await services.go()\n",
        "services.py": "from gpu import compute\nasync def go():\n    return await compute()\n",
        "gpu.py": "async def compute():\n    return 1\n",
        # Two functions of one endpoint in one file: calling each other is local.
        "both.py": "async def first():\n    return await second()\nasync def second(): ...\n",
        # A relative import inside a package, reaching the GPU function.
        "pkg/__init__.py": "",
        "pkg/entry.py": "from .util import helper\nasync def run():\n    return await helper()\n",
        "pkg/util.py": "from gpu import compute as helper\n",
        # Defines a function named like another endpoint's, but never refers to one.
        "alone.py": "def solo():\n    def compute(): ...\n",
    }
    assert makes_remote_calls(endpoints, sources) == {
        "api": True,
        "gpu": False,
        "both": False,
        "pkg": True,
        "alone": False,
    }
