"""The platform process: one Starlette app on ``PlatformConfig.url``, served by uvicorn.

It serves the serverless API and the worker protocol (``serverless.py``, ``workerapi.py``), the
control plane (``controlplane.py``), ``/health``
(unauthenticated: ``flash platform start`` waits on it) and ``/platform/status`` (what
``flash platform status`` shows). ``python -m flash_runtime.platform.server`` runs it in the
foreground; ``flash platform start`` runs that in the background.

Shutdown order matters: on SIGTERM/SIGINT the runtime first drains the workers while the server
still answers (so their last results are recorded), then uvicorn stops. A second signal forces it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp

from .. import __version__
from ..errors import FlashError
from ..protocol.local import PlatformConfig, is_loopback
from ..protocol.wire import UNAUTHORIZED
from . import balancer, controlplane, db, reporting, serverless, tls, volumes, workerapi
from . import logs as logs_api
from .process import instance_lock
from .runtime import PlatformRuntime
from .serverless import ApiError, JSONResponse, api_error_response, bearer_ok
from .settings import RuntimeSettings

log = logging.getLogger("flash_runtime.platform")


def build_app(config: PlatformConfig, runtime: PlatformRuntime) -> ASGIApp:
    """The platform's ASGI app; its lifespan starts and stops ``runtime``. Requests for
    ``{endpoint_id}.{host}`` go to that load-balanced endpoint (``balancer.by_subdomain``)."""

    async def health(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "pid": os.getpid(),
                "url": config.url,
                "version": __version__,
                "endpoints": len(runtime.endpoints),
            }
        )

    async def status(request: Request) -> Response:
        if not bearer_ok(request, config.api_key):
            raise ApiError(401, UNAUTHORIZED)
        return JSONResponse(reporting.status(runtime))

    async def metrics(request: Request) -> Response:
        if not bearer_ok(request, config.api_key):
            raise ApiError(401, UNAUTHORIZED)
        return Response(
            runtime.render_metrics(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    async def worker_logs(request: Request) -> Response:
        """``GET /platform/logs?endpoint=ID&...``: what ``flash logs`` prints, as JSON."""
        if not bearer_ok(request, config.api_key):
            raise ApiError(401, UNAUTHORIZED)
        return JSONResponse(await logs_api.query(runtime, request.query_params))

    async def pod_proxy(request: Request) -> Response:
        """A task pod's runner behind Runpod's proxy URL (``pods.py``); the runner checks the
        pod's own token, as behind Runpod's proxy."""
        body = await serverless.read_body(request)
        status, payload, content_type = await runtime.pods.proxy(
            request.path_params["short"],
            request.query_params.get("to", ""),
            request.method,
            dict(request.headers),
            body,
        )
        return Response(payload, status_code=status, media_type=content_type)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code)

    # The control plane gets its own connection: its transactions never mix with the job
    # store's statements on the same event loop.
    cp_conn = db.connect(config.db_path)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await runtime.start()
        # The runtime restored its own endpoints already; this re-applies the control plane's
        # view (a no-op for endpoints that did not change).
        try:
            await controlplane.resume(cp_conn, runtime, config)
        except Exception:
            log.exception("the control plane could not re-apply its endpoints")
        try:
            yield
        finally:
            await runtime.close()

    routes: list[BaseRoute] = [
        # The hot routes first (matched in order): job-take and job-done, then /runsync, /run.
        *workerapi.routes(runtime),
        *serverless.routes(runtime, controlplane.sentinel_resolver(cp_conn)),
        Route("/health", health, methods=["GET"]),
        Route("/platform/status", status, methods=["GET"]),
        Route("/platform/logs", worker_logs, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/pods/{short}/proxy", pod_proxy, methods=["GET", "POST"]),
        *balancer.alias_routes(runtime),
        *controlplane.routes(cp_conn, runtime, config),
        *volumes.routes(cp_conn, config),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, ApiError: api_error_response},
    )
    return balancer.by_subdomain(app, runtime, controlplane.sentinel_resolver(cp_conn))


class PlatformServer(uvicorn.Server):
    """uvicorn that drains the runtime before it stops answering."""

    def __init__(self, config: uvicorn.Config, runtime: PlatformRuntime) -> None:
        super().__init__(config)
        self.runtime = runtime
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining: asyncio.Task[None] | None = None

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        front = await tls.serve_front(self.runtime.config) if tls.enabled() else None
        try:
            await super().serve(sockets)
        finally:
            if front is not None:
                front.close()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is None or self._draining is not None:
            self.should_exit = True
            self.force_exit = self._draining is not None
            return
        log.info("signal %s: stopping workers, then the server", sig)
        self._loop.call_soon_threadsafe(self._start_drain)

    def _start_drain(self) -> None:
        self._draining = asyncio.ensure_future(self.drain())

    async def drain(self) -> None:
        """Stop the workers (the server keeps answering them meanwhile), then exit."""
        try:
            await self.runtime.close()
        finally:
            self.should_exit = True


def bind(config: PlatformConfig) -> socket.socket:
    """The listening socket, bound before anything starts so a taken port fails at once."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            config.host, config.port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
        )[0]
        # The proto must say TCP: asyncio disables Nagle only on such sockets, and with Nagle
        # every response written in two parts (headers, body) waits ~40 ms for a delayed ACK.
        sock = socket.socket(family, kind, proto)
    except OSError as err:
        raise FlashError(f"cannot resolve the platform host {config.host!r}: {err}") from err
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise FlashError(
            f"cannot listen on {config.host}:{config.port} ({err.strerror}); pick another port "
            "with `flash platform start --port N` or FLASH_PLATFORM_URL"
        ) from err
    sock.listen(2048)
    sock.set_inheritable(False)
    return sock


def uvicorn_config(app: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="on",
        # Long-polls of workers that are gone must not hold the exit for long.
        timeout_graceful_shutdown=3,
        timeout_keep_alive=30,
        server_header=False,
    )


def make_private(config: PlatformConfig) -> list[tuple[Path, int]]:
    """Takes group and other permissions off FLASH_HOME, its ``platform/`` directory and what
    that holds at the top (a home made by an older version, or by hand); returns what it
    changed, with the old modes."""
    changed = []
    paths = [config.home, config.root]
    if config.root.is_dir():
        paths += sorted(config.root.iterdir())
    for path in paths:
        try:
            mode = stat.S_IMODE(path.lstat().st_mode)
        except OSError:
            continue
        if mode & 0o077 and not path.is_symlink():
            path.chmod(mode & 0o700)
            if path.is_dir():
                changed.append((path, mode))
    return changed


def serve(config: PlatformConfig, settings: RuntimeSettings | None = None) -> None:
    """Run the platform in this process until SIGTERM/SIGINT."""
    # Everything the platform and its workers write (the database, with job inputs, outputs and
    # the keys in template envs; logs; artifacts; extracted apps) is for this user alone.
    os.umask(0o077)
    if not is_loopback(config.host):
        if os.environ.get("FLASH_PLATFORM_ALLOW_REMOTE") != "1":
            raise FlashError(
                f"refusing to listen on {config.host}: other machines could reach the platform "
                "and every load-balanced endpoint's port. Use a loopback address (127.0.0.1), "
                "or set FLASH_PLATFORM_ALLOW_REMOTE=1 if you mean it"
            )
        log.warning(
            "LISTENING ON %s (FLASH_PLATFORM_ALLOW_REMOTE=1): the platform and its load "
            "balancers are reachable from other machines; anyone with the key can use them",
            config.host,
        )
    for path, was in make_private(config):
        log.warning("%s was open to other users (mode %o): made private (700)", path, was)
    with instance_lock(config):
        sock = bind(config)
        runtime = PlatformRuntime(config, settings)
        server = PlatformServer(uvicorn_config(build_app(config, runtime)), runtime)
        log.info("platform %s on %s (FLASH_HOME=%s)", __version__, config.url, config.home)
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
            runtime.close_db()


def main() -> int:
    """``python -m flash_runtime.platform.server``."""
    # The workers' formats (worker/logs.py): text lines with a UTC time, or JSON lines
    # (FLASH_LOG_FORMAT=json).
    from ..worker.logs import setup as setup_logging

    setup_logging(os.environ, os.environ.get("FLASH_LOG_LEVEL", "INFO").upper())
    try:
        serve(PlatformConfig.load(), RuntimeSettings.from_env())
    except FlashError as err:
        print(f"flash platform: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
