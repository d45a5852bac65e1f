"""The load-balanced worker: listen at once, load user code in a thread, then serve the routes.

Lifecycle, as the platform sees it:

1. ``PORT`` (and ``PORT_HEALTH`` when set and different) is bound before anything slow runs,
   so the load balancer's health check is answered from the first moment:
   ``GET /ping`` → 204 while loading, every other request → 503 ``{"error": "Initialising"}``.
2. ``prepare()`` (extract the artifact, import user code) runs in a thread while the event loop
   keeps answering. uvicorn serves with uvloop and httptools when they are installed (each
   response's head written with its body, :mod:`._http`).
3. Ready: ``GET /ping`` → 200 ``{"status": "healthy"}`` and the routes are served (see
   :mod:`.router`). ``PORT_HEALTH`` only ever answers ``/ping``.
4. SIGTERM (or SIGINT): stop accepting connections, finish the requests in flight (streams
   included), exit 0.

If ``prepare()`` fails, the error is logged and the worker exits 1 so that the platform restarts
it. Besides :class:`.WorkerConfig`, this reads ``FLASH_MAX_BODY_MB`` (request body limit,
default 20) and ``FLASH_ACCESS_LOG=1`` (uvicorn's access log; off by default, it costs
throughput).

Module-level imports are kept to the standard library: uvicorn, Starlette and the router are
imported only after the port is bound and user code has started loading.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ..envvars import flag, number
from ..errors import FlashError
from . import request_context
from .config import WorkerConfig
from .loader import LoadedResource
from .logs import RequestLog

if TYPE_CHECKING:
    import asyncio

    import uvicorn
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("flash_runtime.worker.lb")

DEFAULT_MAX_BODY_MB = 20.0


def serve(config: WorkerConfig, prepare: Callable[[], LoadedResource]) -> int:
    """Serve a load-balanced resource until SIGTERM; returns the process exit code."""
    return LBWorker(config, prepare).run()


def max_body_bytes(env: Mapping[str, str]) -> int:
    """``FLASH_MAX_BODY_MB`` in bytes (fractions allowed, e.g. ``0.5``)."""
    megabytes = number(
        env, "FLASH_MAX_BODY_MB", DEFAULT_MAX_BODY_MB, positive=True, unit="megabytes"
    )
    return int(megabytes * 1024 * 1024)


class Lifecycle:
    """The ASGI app uvicorn serves: answers by itself while loading, then hands to the router."""

    def __init__(
        self,
        health_port: int | None = None,
        key: str | None = None,
        requests: RequestLog | None = None,
    ) -> None:
        self.router: ASGIApp | None = None
        self.health_port = health_port
        self.requests = requests if requests is not None and requests.enabled else None
        # FLASH_WORKER_KEY: set by the local platform, whose balancer sends it with every
        # request (X-Flash-Worker-Key), so the worker's own port serves no one else. Runpod
        # sets none: there only its load balancer reaches the port.
        self.key = key.encode() if key else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.key is not None and scope["type"] == "http" and not self._keyed(scope):
            from .lb_responses import error_response
            from .router import read_headers

            response = error_response(
                401,
                "Unauthorized",
                "this worker answers its platform's load balancer only",
                read_headers(scope)[0],
            )
            await response(scope, receive, send)
            return
        router = self.router
        if router is not None and not self._on_health_port(scope):
            if self.requests is None or scope["type"] != "http" or scope["path"] == "/ping":
                await router(scope, receive, send)
            else:
                await self._logged(router, scope, receive, send)
            return
        await self._answer(scope, receive, send)

    async def _logged(self, router: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one request and write its request line (method, path, status, duration)."""
        started = time.perf_counter()
        status = [500]

        async def send_noting(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await router(scope, receive, send_noting)
        finally:
            assert self.requests is not None
            # The router made the request's id current in this task (request_context).
            request_id = request_context.current.get() or "-"
            self.requests.record(
                scope["method"], scope["path"], status[0], time.perf_counter() - started, request_id
            )

    def _keyed(self, scope: Scope) -> bool:
        """Whether the request carries the worker key; the header is taken off for user code."""
        headers = scope["headers"]
        for i, (name, value) in enumerate(headers):
            if name == b"x-flash-worker-key":
                assert self.key is not None
                if not hmac.compare_digest(value, self.key):
                    return False
                del headers[i]  # uvicorn's own list for this request: no copy
                return True
        return False

    def _on_health_port(self, scope: Scope) -> bool:
        if self.health_port is None:
            return False
        return bool((scope.get("server") or (None, 0))[1] == self.health_port)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        """/ping (204 while loading, 200 once ready) and errors for everything else."""
        from starlette.responses import Response

        from .lb_responses import JSONBytes, encode_json, error_response
        from .router import HEALTHY, read_headers

        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1013})
            return
        request_id = read_headers(scope)[0]
        response: Response
        if scope["path"] == "/ping" and scope["method"] in ("GET", "HEAD"):
            if self.router is None:
                response = Response(status_code=204, headers={"x-request-id": request_id})
            else:
                response = JSONBytes(encode_json(HEALTHY), request_id)
        elif self._on_health_port(scope):
            response = error_response(
                404,
                "NotFound",
                f"the health port {self.health_port} serves only GET /ping",
                request_id,
            )
        else:
            response = error_response(
                503,
                "Initialising",
                "the worker is initialising (loading user code); retry once GET /ping returns 200",
                request_id,
                headers={"retry-after": "1"},
            )
        await response(scope, receive, send)


class LBWorker:
    """One load-balanced worker process: sockets, the loading thread and the uvicorn server."""

    def __init__(self, config: WorkerConfig, prepare: Callable[[], LoadedResource]) -> None:
        self.config = config
        self._prepare = prepare
        self.max_body_bytes = max_body_bytes(config.env)
        self.access_log = flag(config.env.get("FLASH_ACCESS_LOG"))
        health = config.port_health
        self.requests = RequestLog(config.env)
        self.app = Lifecycle(
            health if health and health != config.port else None,
            key=config.env.get("FLASH_WORKER_KEY"),
            requests=self.requests,
        )
        self.exit_code = 0
        self.ready = threading.Event()
        self._server: uvicorn.Server | None = None
        self._stopping = False
        self._in_image = False
        # The serving loop (for start-up hooks of 2.0 apps), and what runs once it has stopped.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_ready = threading.Event()
        self._shutdown: Callable[[], Coroutine[Any, Any, Any]] | None = None

    def run(self) -> int:
        """Bind, start loading, serve until told to stop; returns the exit code."""
        config = self.config
        ports = [config.port] + ([self.app.health_port] if self.app.health_port else [])
        sockets: list[socket.socket] = []
        try:
            for port in ports:
                sockets.append(_listen(config.host, port))
        except OSError as err:
            for sock in sockets:
                sock.close()
            log.error("cannot listen on %s:%s: %s", config.host, port, err.strerror or err)
            return 1
        log.info(
            "listening on http://%s:%d%s; loading user code",
            config.host,
            sockets[0].getsockname()[1],
            f" (health: {self.app.health_port})" if self.app.health_port else "",
        )
        threading.Thread(target=self._load, name="flash-load", daemon=True).start()

        from . import _uvicorn, router  # noqa: F401 - router: imported while user code loads

        config_class, _ = _uvicorn.load()
        uvicorn_config = config_class(
            self.app,
            interface="asgi3",
            lifespan="off",
            ws="none",
            loop="auto",
            http=_http_protocol(),
            log_config=None,
            log_level="debug" if config.log_level == "DEBUG" else "warning",
            access_log=self.access_log,
            proxy_headers=False,  # the platform's load balancer is the only client
            server_header=False,
            timeout_graceful_shutdown=None,  # in-flight requests finish, however long
        )
        if self.access_log:
            logging.getLogger("uvicorn.access").setLevel(logging.INFO)
        server = _server_class(self)(uvicorn_config)
        self._server = server
        if self._stopping:
            server.should_exit = True
        try:
            server.run(sockets=sockets)
        finally:
            self.requests.close()
            for sock in sockets:
                sock.close()
        log.info("stopped (exit code %d)", self.exit_code)
        return self.exit_code

    def in_image(self) -> ASGIApp:
        """Start loading and return the app for a Runpod Flash image's own uvicorn to serve
        (:func:`.handover.hand_over`): our lifecycle in the FastAPI instance the image's entry
        asks for. The image's server listens, so ``PORT_HEALTH`` is not served separately
        (the hand-over execs our bootstrap instead when it is set); a failed load ends the
        process with exit code 1, as the bootstrap's does."""
        from fastapi import FastAPI

        self._in_image = True
        threading.Thread(target=self._load, name="flash-load", daemon=True).start()
        from . import router  # noqa: F401 - imported while user code loads

        lifecycle, worker = self.app, self

        class FlashWorkerApp(FastAPI):
            """The image adds its ``/ping`` route to this app's router, which never sees a
            request: everything goes to our lifecycle (``/ping`` 204 until user code is
            loaded, then 200)."""

            async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
                if scope["type"] == "lifespan":
                    await worker._lifespan(receive, send)
                else:
                    await lifecycle(scope, receive, send)

        return FlashWorkerApp(openapi_url=None, docs_url=None, redoc_url=None)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        import asyncio

        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._loop = asyncio.get_running_loop()
                self._loop_ready.set()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self._shutdown is not None:
                    await self._shutdown()
                self.requests.close()
                log.info("stopped")
                await send({"type": "lifespan.shutdown.complete"})
                return

    def stop(self) -> None:
        """Begin a graceful shutdown (what SIGTERM does); safe from any thread."""
        self._stopping = True
        if self._server is not None:
            self._server.should_exit = True

    def _load(self) -> None:
        try:
            loaded = self._prepare()
            if loaded.asgi is not None:
                router = loaded.asgi
            else:
                from .router import Router

                router = Router.for_resource(loaded, max_body_bytes=self.max_body_bytes)
            if loaded.startup is not None:
                self._on_loop(loaded.startup)
            self._shutdown = loaded.shutdown
        except BaseException as err:
            self.exit_code = 1
            if isinstance(err, FlashError):
                log.error("worker cannot start: %s", err, exc_info=err if err.__cause__ else None)
            else:
                log.error(
                    "worker cannot start: loading user code raised %s: %s",
                    type(err).__name__,
                    err,
                    exc_info=err,
                )
            if self._in_image:  # the image's server is not ours to stop: end the process
                import os

                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(1)
            self.stop()
            return
        self.app.router = router
        self.ready.set()
        routes = getattr(router, "routes", None) if loaded.asgi is None else None
        log.info(
            "ready: %s serves %s",
            loaded.name,
            ", ".join(route.key for route in routes) if routes else "its ASGI app",
        )

    def _on_loop(self, start: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """Run a start-up coroutine on the serving event loop (from the loading thread)."""
        import asyncio

        self._loop_ready.wait()
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(start(), self._loop).result()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)


def _http_protocol() -> Any:
    """uvicorn's httptools protocol writing a response's head with its body (:mod:`._http`), or
    uvicorn's own choice when httptools is not installed."""
    try:
        from ._http import HeadWithBodyProtocol
    except ImportError:
        return "auto"
    return HeadWithBodyProtocol


def _server_class(worker: LBWorker) -> type[uvicorn.Server]:
    """uvicorn's Server, exiting 0 after a graceful shutdown on SIGTERM.

    (uvicorn re-raises the captured signal once it has shut down, which would end the process
    "killed by SIGTERM" even though every request finished.)
    """
    from . import _uvicorn

    _, server_class = _uvicorn.load()

    class Server(server_class):  # type: ignore[valid-type,misc]
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            handled = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            import asyncio

            worker._loop = asyncio.get_running_loop()
            worker._loop_ready.set()
            await super().startup(sockets)

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            log.info(
                "shutting down: finishing %d request(s) in flight", len(self.server_state.tasks)
            )
            await super().shutdown(sockets)
            if worker._shutdown is not None:
                await worker._shutdown()

    return Server
