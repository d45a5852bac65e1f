"""The second front end (``worker/apps.py``) on hand-made 2.0 app directories.

The Runpod SDK 2.0 is not installed in the test environment (its own venv drives the end-to-end
tests), so the handles here are stand-ins with the attributes the front end reads: a queue
handle's ``_fn``/``_init_fn``, an api handle's ``_cls``/``_init_name`` or ``_asgi_factory``.
That pins the contract the front end relies on; ``tests/e2e/test_sdk2_apps.py`` runs the real SDK.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import serve_asgi

from flash_runtime import appmanifest
from flash_runtime.errors import FlashError, ManifestError
from flash_runtime.worker import apps
from flash_runtime.worker.handler import Handler
from flash_runtime.worker.router import Router

MODULE = """
import os

class FunctionHandle:
    def __init__(self, fn, init=None):
        self._fn, self._init_fn = fn, init

class ApiHandle:
    def __init__(self, cls=None, factory=None, init_name=None):
        self._cls, self._asgi_factory, self._init_name = cls, factory, init_name

STATE = {}

def _double(x: int):
    return {"double": 2 * x, "ready": STATE.get("ready"), "loop": STATE.get("loop")}

def _ready():
    STATE["ready"] = True

async def _on_loop():
    import asyncio
    STATE["loop"] = id(asyncio.get_running_loop())

double = FunctionHandle(_double, _ready)
double_async_init = FunctionHandle(_double, _on_loop)
not_a_handle = 42

class _Calc:
    def setup(self):
        self.base = 10
    def add(self, body):
        return {"sum": self.base + body["x"]}
    async def base_value(self):
        return {"base": self.base}
    def chunks(self, body):
        for i in range(body["n"]):
            yield i

calc = ApiHandle(cls=_Calc, init_name="setup")

async def _app(scope, receive, send):
    if scope["type"] == "lifespan":
        message = await receive()
        scope["state"]["greeting"] = "hi"
        await send({"type": "lifespan.startup.complete"})
        await receive()
        await send({"type": "lifespan.shutdown.complete"})
        return
    body = ("%s %s" % (scope["path"], scope.get("state", {}).get("greeting"))).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})

site = ApiHandle(factory=lambda: _app)

async def _plain(scope, receive, send):
    if scope["type"] != "http":
        raise RuntimeError("no lifespan here")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"plain"})

plain = ApiHandle(factory=lambda: _plain)

async def _failing(scope, receive, send):
    await receive()
    await send({"type": "lifespan.startup.failed", "message": "no database"})

failing = ApiHandle(factory=lambda: _failing)
"""


def _resource(kind: str, name: str, qualname: str, **extra: Any) -> dict[str, Any]:
    return {"kind": kind, "name": name, "module": "shop", "qualname": qualname, **extra}


def _app_dir(tmp_path: Path, resources: list[dict[str, Any]], python: str | None = None) -> Path:
    root = tmp_path / "app"
    (root / "env").mkdir(parents=True)
    # The module name is the test's own, so that test modules never share it in sys.modules.
    (root / "shop.py").write_text(textwrap.dedent(MODULE))
    manifest = {
        "version": 1,
        "app": "shop",
        "pythonVersion": python or f"{sys.version_info.major}.{sys.version_info.minor}",
        "resources": resources,
    }
    (root / appmanifest.APP_MANIFEST_NAME).write_text(json.dumps(manifest))
    return root


@pytest.fixture(autouse=True)
def _fresh_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("RUNPOD_MOUNTS", raising=False)
    monkeypatch.delenv("RUNPOD_MAX_CONCURRENCY", raising=False)
    yield
    sys.modules.pop("shop", None)


def _load(root: Path, name: str, env: dict[str, str] | None = None) -> Any:
    manifest = apps.read(root)[1]
    return apps.load(root, manifest, name, env or {})


def test_the_manifest_converts_to_one_endpoint_per_queue_and_api_resource(tmp_path: Path) -> None:
    root = _app_dir(
        tmp_path,
        [
            _resource("queue", "double", "double", maxConcurrency=3),
            _resource(
                "api",
                "calc",
                "calc",
                routes=[{"method": "POST", "path": "/add", "handler": "add"}],
            ),
            _resource("task", "crunch", "double"),
        ],
    )
    app, converted = apps.read(root)
    assert [r.name for r in app.resources] == ["double", "calc", "crunch"]
    assert set(converted.resources) == {"double", "calc"}  # a task has no endpoint
    assert converted.resources["double"].max_concurrency == 3
    assert converted.resources["calc"].is_load_balanced
    view = appmanifest.serving_view(json.loads((root / appmanifest.APP_MANIFEST_NAME).read_text()))
    assert view["resources"]["calc"]["is_load_balanced"] is True
    assert view["python_version"] == app.python_version


def test_a_queue_function_runs_its_init_once_and_serves_jobs(tmp_path: Path) -> None:
    root = _app_dir(tmp_path, [_resource("queue", "double", "double", maxConcurrency=2)])
    loaded = _load(root, "double")
    assert loaded.startup is None  # a plain hook ran while loading
    assert str(root / "env") == sys.path[0] and str(root) == sys.path[1]
    handler = Handler(loaded)
    assert handler.slots == 2
    result = asyncio.run(handler.result({"id": "j1", "input": {"x": 4, "__empty": True}}))
    assert result == {"output": {"double": 8, "ready": True, "loop": None}}
    bad = asyncio.run(handler.result({"id": "j2", "input": {"y": 4}}))
    assert "x" in bad["error"]


def test_a_coroutine_init_hook_is_left_for_the_serving_loop(tmp_path: Path) -> None:
    root = _app_dir(tmp_path, [_resource("queue", "double", "double_async_init")])
    loaded = _load(root, "double", {"RUNPOD_MAX_CONCURRENCY": "4"})
    assert loaded.startup is not None and Handler(loaded).slots == 4
    assert sys.modules["shop"].STATE.get("loop") is None
    asyncio.run(loaded.startup())
    assert sys.modules["shop"].STATE["loop"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"RUNPOD_MAX_CONCURRENCY": "lots"}, "whole number"),
        ({"RUNPOD_MAX_CONCURRENCY": "0"}, "at least 1"),
        ({"RUNPOD_MOUNTS": "{nope"}, "not valid JSON"),
        ({"RUNPOD_MOUNTS": '{"kind": "network"}'}, "JSON list"),
        ({"RUNPOD_MOUNTS": "[]"}, "runpod SDK cannot be imported"),
    ],
)
def test_bad_worker_settings_are_clear_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str
) -> None:
    # The test environment's runpod is 1.x (no runpod.apps): what an artifact without its
    # env/ would find.
    root = _app_dir(tmp_path, [_resource("queue", "double", "double")])
    with pytest.raises(FlashError, match=message):
        _load(root, "double", env)


@pytest.mark.parametrize(
    ("resource", "message"),
    [
        (_resource("task", "crunch", "double"), "tasks run on a pod"),
        (_resource("queue", "double", "missing"), "has no 'missing'"),
        (_resource("queue", "double", "not_a_handle"), "not an @app.queue function"),
        (_resource("api", "double", "double", asgiFactory="x"), "not an @app.api class"),
        ({**_resource("queue", "double", "double"), "module": "nowhere"}, "importing module"),
    ],
)
def test_what_the_front_end_cannot_serve_is_a_clear_error(
    tmp_path: Path, resource: dict[str, Any], message: str
) -> None:
    root = _app_dir(tmp_path, [resource])
    with pytest.raises(ManifestError, match=message):
        _load(root, resource["name"])


def test_a_build_for_another_python_is_refused(tmp_path: Path) -> None:
    root = _app_dir(tmp_path, [_resource("queue", "double", "double")], python="3.9")
    with pytest.raises(ManifestError, match=r"built for Python 3\.9"):
        apps.read(root)


def test_manifests_that_are_not_2_0_apps_are_refused_with_what_is_wrong() -> None:
    with pytest.raises(ManifestError, match="needs routes or asgiFactory"):
        appmanifest.from_builtins({"resources": [_resource("api", "a", "A")]})
    with pytest.raises(ManifestError, match="used twice"):
        appmanifest.from_builtins({"resources": [_resource("queue", "a", "f")] * 2})
    with pytest.raises(ManifestError, match="no module/qualname"):
        appmanifest.from_builtins({"resources": [{"kind": "queue", "name": "a"}]})
    with pytest.raises(ManifestError, match="kind"):
        appmanifest.from_builtins({"resources": [_resource("sandbox", "a", "f")]})


async def _get(url: str, method: str = "GET", data: bytes | None = None) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, data=data) as response,
    ):
        return response.status, await response.text()


def test_api_class_routes_take_the_whole_body_or_nothing(tmp_path: Path) -> None:
    routes = [
        {"method": "POST", "path": "/add", "handler": "add"},
        {"method": "GET", "path": "/base", "handler": "base_value"},
        {"method": "POST", "path": "/base", "handler": "base_value"},
        {"method": "POST", "path": "/chunks", "handler": "chunks"},
    ]
    root = _app_dir(tmp_path, [_resource("api", "calc", "calc", routes=routes)])
    loaded = _load(root, "calc")
    with serve_asgi(Router.for_resource(loaded)) as url:
        assert asyncio.run(_get(f"{url}/add", "POST", b'{"x": 5}')) == (200, '{"sum":15}')
        assert asyncio.run(_get(f"{url}/base?x=1")) == (200, '{"base":10}')
        assert asyncio.run(_get(f"{url}/base", "POST", b"")) == (200, '{"base":10}')
        status, body = asyncio.run(_get(f"{url}/add", "POST", b"{nope"))
        assert status == 400 and json.loads(body)["error"] == "MalformedBody"
        status, body = asyncio.run(_get(f"{url}/chunks", "POST", b'{"n": 3}'))
        assert status == 200 and body.split() == ["0", "1", "2"]


def test_an_asgi_factory_app_gets_its_lifespan_and_our_ping(tmp_path: Path) -> None:
    root = _app_dir(
        tmp_path,
        [
            _resource("api", "site", "site", asgiFactory="site"),
            _resource("api", "plain", "plain", asgiFactory="plain"),
            _resource("api", "failing", "failing", asgiFactory="failing"),
        ],
    )
    site = _load(root, "site")
    front = site.asgi
    assert isinstance(front, apps.AppFront) and site.startup is not None

    async def check() -> None:
        with serve_asgi(front) as url:
            await site.startup()
            assert await _get(f"{url}/hello") == (200, "/hello hi")
            status, body = await _get(f"{url}/ping")
            assert status == 200 and json.loads(body) == {"status": "healthy"}
            assert site.shutdown is not None
            await site.shutdown()

    asyncio.run(check())
    plain = _load(root, "plain")
    assert plain.startup is not None
    asyncio.run(plain.startup())  # an app without lifespan support: served without one
    failing = _load(root, "failing")
    assert failing.startup is not None
    with pytest.raises(FlashError, match="lifespan startup failed: no database"):
        asyncio.run(failing.startup())
