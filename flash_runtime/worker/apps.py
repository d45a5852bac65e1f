"""The second front end: workers of Runpod SDK 2.0 apps (``runpod.App``, ``runpod_manifest.json``).

A 2.0 artifact holds the project, an ``env/`` directory of vendored packages (the 2.0 SDK among
them) and ``runpod_manifest.json`` (``flash_runtime/appmanifest.py``). The bootstrap recognises
it after extraction and comes here to load the resource; everything after loading is the same
machinery as for 1.x artifacts: our job loop for ``queue`` resources, our router for ``api``
classes, and the user's own ASGI app behind our load-balanced lifecycle for ``api`` factories.

What loading does, in the order ``runpod-sdk-runtime`` does it:

* ``env/`` and the app directory go first on ``sys.path`` (the artifact's SDK wins over any in
  the image); ``RUNPOD_APP_DIR`` is set to the app directory;
* ``RUNPOD_MOUNTS`` (a JSON list of ``{kind, reference, id, path}``) is handed to the SDK
  (``runpod.apps.volume``) before user code runs, so ``volume.path`` works in it;
* the resource's module is imported and its handle found by ``qualname``;
* init hooks run once before the worker is ready: a queue function's ``@fn.init``, an api
  class's ``@init`` method (after the class is instantiated once), a factory app's lifespan
  startup. Coroutine hooks run on the event loop that then serves (so what they create, such as
  client sessions, is usable by the handlers); plain ones run while loading.

Calling conventions (those of the 2.0 runtime): a queue job's ``input`` object is the function's
keyword arguments (``__empty`` dropped), checked against its hints like a 1.x function's; a
generator streams its chunks and its result holds them all. An api route method receives the
request's whole JSON body as its one argument, or no argument when the request has no body (or
is a GET); a body that is not JSON is a 400 here (the 2.0 runtime calls the method without it).
``RUNPOD_MAX_CONCURRENCY`` sets a queue worker's slots.

Not supported here, with an error saying so at load: a handle of a kind this front end does not
serve (``task`` resources run as task pods, not endpoints), and ``rp flash dev``'s live mode
(workers without an artifact, fed source code per request).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from .. import appmanifest
from ..errors import FlashError, ManifestError, describe
from ..manifest import Manifest
from .arguments import ArgSpec
from .loader import Callee, LoadedFunction, LoadedResource, kind_of

log = logging.getLogger("flash_runtime.worker.apps")


def read(app_dir: Path) -> tuple[appmanifest.AppManifest, Manifest]:
    """The app's manifest, and the same seen as a ``flash_manifest.json``; the Python version
    checked against this interpreter's."""
    from ..manifest import interpreter_version

    app = appmanifest.load(app_dir / appmanifest.APP_MANIFEST_NAME)
    here = interpreter_version()
    if app.python_version and app.python_version != here:
        raise ManifestError(
            f"the app was built for Python {app.python_version} but this worker runs Python "
            f"{here}; deploy again with `rp flash deploy --python-version {here}`, or use a "
            f"py{app.python_version} runtime image"
        )
    return app, appmanifest.as_flash_manifest(app)


def attach(app_dir: Path) -> None:
    """``env/`` then the app directory first on ``sys.path`` (and ``RUNPOD_APP_DIR``)."""
    env_dir = app_dir / appmanifest.ENV_DIR
    for path in (str(app_dir), str(env_dir)):
        if path in sys.path:
            sys.path.remove(path)
        if path == str(env_dir) and not env_dir.is_dir():
            log.warning("the artifact has no %s/: its packages must come from the image", env_dir)
            continue
        sys.path.insert(0, path)
    importlib.invalidate_caches()
    os.environ["RUNPOD_APP_DIR"] = str(app_dir)


def configure_mounts(env: dict[str, str] | os._Environ[str]) -> None:
    """Hand ``RUNPOD_MOUNTS`` to the app's SDK before user code runs."""
    raw = env.get("RUNPOD_MOUNTS")
    if not raw:
        return
    try:
        bindings = json.loads(raw)
    except json.JSONDecodeError as err:
        raise FlashError(
            f"RUNPOD_MOUNTS is not valid JSON ({err}); it must be a JSON list"
        ) from None
    if not isinstance(bindings, list):
        raise FlashError("RUNPOD_MOUNTS must be a JSON list of {kind, reference, id, path}")
    try:
        volume = importlib.import_module("runpod.apps.volume")
    except ImportError as err:
        raise FlashError(
            f"RUNPOD_MOUNTS is set but the app's runpod SDK cannot be imported ({err}); the "
            "artifact's env/ should hold it"
        ) from None
    try:
        volume._configure_mounts(bindings)
    except Exception as err:
        raise FlashError(f"RUNPOD_MOUNTS: {describe(err)}") from None


def _handle(app_dir: Path, resource: appmanifest.AppResource) -> Any:
    try:
        module = importlib.import_module(resource.module)
    except Exception as err:
        raise ManifestError(
            f"importing module {resource.module!r} of resource {resource.name!r} failed: "
            f"{type(err).__name__}: {describe(err)}"
        ) from err
    try:
        return functools.reduce(getattr, resource.qualname.split("."), module)
    except AttributeError:
        raise ManifestError(
            f"module {resource.module!r} has no {resource.qualname!r}, which the app's manifest "
            f"names for resource {resource.name!r}; deploy again"
        ) from None


def _run_now_or_later(
    hook: Callable[[], Any], starts: list[Callable[[], Coroutine[Any, Any, Any]]]
) -> None:
    """Run a plain hook now; a coroutine hook is kept to run on the serving loop."""
    if inspect.iscoroutinefunction(hook):
        starts.append(hook)
        return
    result = hook()
    if inspect.isawaitable(result):  # a plain function returning an awaitable
        starts.append(functools.partial(_await, result))


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


async def _run_all(starts: list[Callable[[], Coroutine[Any, Any, Any]]]) -> None:
    for start in starts:
        await start()


def load(app_dir: Path, manifest: Manifest, name: str, env: Any = None) -> LoadedResource:
    """Import resource ``name`` of the 2.0 app in ``app_dir`` and make it servable."""
    app, _ = read(app_dir)
    resource = app.resource(name)
    if resource.kind == "task":
        raise ManifestError(
            f"resource {name!r} is a task: tasks run on a pod per call (`@app.task`), not as "
            "endpoint workers"
        )
    os.environ["FLASH_RESOURCE_NAME"] = name
    attach(app_dir)
    configure_mounts(os.environ if env is None else env)
    started = time.perf_counter()
    handle = _handle(app_dir, resource)
    flash_resource = manifest.resource(name)
    entry = flash_resource.functions[0]
    starts: list[Callable[[], Coroutine[Any, Any, Any]]] = []
    shutdowns: list[Callable[[], Coroutine[Any, Any, Any]]] = []
    loaded: LoadedResource
    if resource.kind == "queue":
        fn = getattr(handle, "_fn", None)
        if fn is None or not callable(fn):
            raise ManifestError(
                f"{resource.qualname!r} in {resource.module!r} is not an @app.queue function "
                f"(a {type(handle).__name__}); deploy again"
            )
        init = getattr(handle, "_init_fn", None)
        if init is not None:
            _run_now_or_later(init, starts)
        concurrency = _max_concurrency(os.environ if env is None else env, resource)
        flash_resource.max_concurrency = concurrency
        callee = Callee(resource.name, fn, kind_of(fn), ArgSpec(fn))
        functions = [LoadedFunction(entry, fn, callee=callee)]
        loaded = LoadedResource(name, manifest, flash_resource, app_dir, functions)
    else:
        cls = getattr(handle, "_cls", None)
        factory = getattr(handle, "_asgi_factory", None)
        if cls is not None:
            instance = cls()
            init_name = getattr(handle, "_init_name", None)
            if init_name:
                _run_now_or_later(getattr(instance, init_name), starts)
            routes = [
                (route.method, route.path, _body_callee(instance, cls, route.handler))
                for route in resource.routes
            ]
            functions = [LoadedFunction(entry, cls, instance=instance)]
            loaded = LoadedResource(name, manifest, flash_resource, app_dir, functions)
            loaded.routes = routes
        elif factory is not None:
            asgi = factory()
            if inspect.isawaitable(asgi):
                raise ManifestError(
                    f"the ASGI factory {resource.qualname!r} of resource {name!r} is a "
                    "coroutine function; it must return the app (a plain function)"
                )
            front = AppFront(asgi)
            starts.append(front.startup)
            shutdowns.append(front.shutdown)
            functions = [LoadedFunction(entry, factory)]
            loaded = LoadedResource(name, manifest, flash_resource, app_dir, functions)
            loaded.asgi = front
        else:
            raise ManifestError(
                f"{resource.qualname!r} in {resource.module!r} is not an @app.api class or "
                f"ASGI factory (a {type(handle).__name__}); deploy again"
            )
    if starts:
        loaded.startup = functools.partial(_run_all, starts)
    if shutdowns:
        loaded.shutdown = functools.partial(_run_all, shutdowns)
    loaded.import_seconds = time.perf_counter() - started
    return loaded


def _max_concurrency(env: Any, resource: appmanifest.AppResource) -> int:
    raw = (env.get("RUNPOD_MAX_CONCURRENCY") or "").strip()
    if not raw:
        return max(1, resource.max_concurrency)
    try:
        value = int(raw)
    except ValueError:
        raise FlashError(f"RUNPOD_MAX_CONCURRENCY={raw!r} must be a whole number") from None
    if value < 1:
        raise FlashError(f"RUNPOD_MAX_CONCURRENCY={raw!r} must be at least 1")
    return value


def _no_body() -> None:  # the ArgSpec of a whole-body route: nothing to check
    """A route method's argument is the whole body, not fields of it."""


def _body_callee(instance: Any, cls: type, handler: str) -> Callee:
    """The callee of one route method: called with the body, or with nothing."""
    try:
        bound = getattr(instance, handler)
    except AttributeError:
        raise ManifestError(
            f"{cls.__name__} has no method {handler!r}, which the app's manifest routes to; "
            "deploy again"
        ) from None
    kind = kind_of(bound)
    func: Callable[..., Any]
    if kind == "async":

        async def call_async(body: Any = None) -> Any:
            return await (bound() if body is None else bound(body))

        func = call_async
    else:

        def call(body: Any = None) -> Any:
            return bound() if body is None else bound(body)

        func = call
    return Callee(f"{cls.__name__}.{handler}", func, kind, ArgSpec(_no_body), whole_body=True)


class AppFront:
    """The user's ASGI app behind the worker: ``GET /ping`` answered unless the app routes it,
    its lifespan started before the worker is ready (and its state given to each request)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        routes = getattr(app, "routes", None) or []
        self.own_ping = any(getattr(r, "path", None) == "/ping" for r in routes)
        self.state: dict[str, Any] = {}
        self._receive: Any = None
        self._events: Any = None
        self._task: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            if (
                scope["path"] == "/ping"
                and not self.own_ping
                and scope["method"] in ("GET", "HEAD")
            ):
                from .lb_responses import JSONBytes, encode_json
                from .router import HEALTHY, read_headers

                await JSONBytes(encode_json(HEALTHY), read_headers(scope)[0])(scope, receive, send)
                return
            if self.state:
                scope["state"] = dict(self.state)
        await self.app(scope, receive, send)

    async def startup(self) -> None:
        """Run the app's lifespan startup; an app that does not speak lifespan is fine."""
        import asyncio

        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}}
        scope["state"] = self.state

        async def run() -> None:
            try:
                await self.app(scope, inbox.get, events.put)
            except BaseException as err:
                await events.put({"type": "lifespan.crashed", "error": err})
                return
            await events.put({"type": "lifespan.returned"})

        self._receive, self._events = inbox, events
        self._task = asyncio.get_running_loop().create_task(run())
        await inbox.put({"type": "lifespan.startup"})
        event = await events.get()
        if event["type"] == "lifespan.startup.complete":
            return
        self._task = None
        if event["type"] == "lifespan.startup.failed":
            raise FlashError(f"the app's lifespan startup failed: {event.get('message', '')}")
        # An app without lifespan support raises or returns at once (uvicorn's "auto" mode
        # carries on without it, and so do we).
        if event["type"] == "lifespan.crashed":
            log.info("the app does not run a lifespan (%s); serving without", event["error"])

    async def shutdown(self) -> None:
        if self._task is None:
            return
        await self._receive.put({"type": "lifespan.shutdown"})
        event = await self._events.get()
        if event["type"] == "lifespan.shutdown.failed":
            log.error("the app's lifespan shutdown failed: %s", event.get("message", ""))
