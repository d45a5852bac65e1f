"""The load balancer of one load-balanced endpoint: its own loopback port, routes at the root.

Like ``https://{id}.api.runpod.ai``: every request (any method and path) is checked for the
API key and passed to the ready worker with the fewest requests in flight; the response, headers
and body, streams back as the worker produces it (chunked and SSE responses included). A worker
is ready while its ``/ping`` answers 200; the balancer polls it. With no ready worker a request
waits (a cold start from zero starts one) up to ``lb_ready_wait_s``, then gets 503 with a JSON
body that says why.

Its port is a Starlette app on an embedded uvicorn server in the platform's own event loop
(``transport.Listener``); the platform's ``/lb/{id}/...`` alias of it goes through the same
:meth:`Balancer.forward` and the same relay (``transport.relay``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..protocol.wire import (
    HOP_BY_HOP,
    SENTINEL_ID,
    UNAUTHORIZED,
    key_matches,
    request_id_of,
    sentinel_names,
)
from . import reporting, transport
from .jobs import JobStore
from .metrics import Metrics
from .state import EndpointState
from .supervisor import Worker, WorkerState

if TYPE_CHECKING:
    import aiohttp

    from ..protocol.local import PlatformConfig
    from .settings import RuntimeSettings
    from .supervisor import Supervisor


class BalancerHost(Protocol):
    """What a balancer asks of the runtime that owns it (``runtime.PlatformRuntime``)."""

    config: PlatformConfig
    settings: RuntimeSettings
    supervisor: Supervisor
    session: aiohttp.ClientSession | None
    jobs: JobStore
    metrics: Metrics

    def worker_ready(self, ep: EndpointState, worker: Worker) -> None: ...

    def kick(self) -> None: ...

    def endpoint(self, endpoint_id: str) -> EndpointState | None: ...


log = logging.getLogger("flash_runtime.platform")

# The header carrying a worker's own key to its port (see worker/lb.py, FLASH_WORKER_KEY).
WORKER_KEY_HEADER = "X-Flash-Worker-Key"
PING_STARTING_S = 0.2  # ping period while a worker boots: readiness is noticed quickly
PING_READY_S = 1.0
PING_TIMEOUT_S = 2.0
# A ready worker whose /ping fails this long is killed (and replaced, as after a crash).
UNHEALTHY_KILL_S = 30.0
CONNECT_RETRIES = 2


UNAUTHORIZED_BODY = {"error": UNAUTHORIZED}
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class ProxyError(Exception):
    """No worker could answer: ``status`` and a JSON ``body`` for the caller."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("error"))
        self.status = status
        self.body = body


class Balancer:
    """Proxy for one load-balanced endpoint."""

    def __init__(self, runtime: BalancerHost, ep: EndpointState) -> None:
        self.runtime = runtime
        self.ep = ep
        self.port: int | None = None
        self.closing = False
        self._listener: transport.Listener | None = None
        self._watchers: dict[str, asyncio.Task[None]] = {}
        self._picks = itertools.count()
        self._last_pick: dict[str, int] = {}

    async def start(self, port: int) -> None:
        """Listen on ``port`` (loopback); OSError when it is taken."""

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            # A bare ASGI app: every path is the worker's, and no middleware stands between
            # the socket and the relay (a Starlette app's stack took about a fifth of the
            # proxy's time in a profile under wrk).
            if scope["type"] != "http":
                return
            request = Request(scope, receive)
            raw: bytes = scope.get("raw_path") or scope["path"].encode()
            query = scope.get("query_string") or b""
            target = raw.decode("latin-1") + (f"?{query.decode('latin-1')}" if query else "")
            try:
                response = await self.forward(request, target)
            except Exception:
                log.exception("balancer of %s failed on %s %s", self.ep.id, scope["method"], target)
                response = transport.json_response(500, {"error": "the balancer failed"})
            await response(scope, receive, send)

        self._listener = transport.Listener(app, self.runtime.config.host, port)
        self.port = self._listener.port
        log.info("endpoint %s balancer on port %s", self.ep.id, self.port)

    async def close(self) -> None:
        self.closing = True
        for task in self._watchers.values():
            task.cancel()
        self._watchers.clear()
        if self._listener is not None:
            await self._listener.close()
            self._listener = None

    # -- readiness --------------------------------------------------------------------------

    def watch(self, worker: Worker) -> None:
        """Poll a new worker's ``/ping`` for as long as it lives."""
        self._watchers[worker.id] = asyncio.create_task(
            self._ping_loop(worker), name=f"ping-{worker.id}"
        )

    async def _ping_loop(self, worker: Worker) -> None:
        session = self.runtime.session
        assert session is not None
        url = f"http://{self.runtime.config.host}:{worker.port}/ping"
        keyed = {WORKER_KEY_HEADER: worker.key} if worker.key else {}
        timeout = aiohttp.ClientTimeout(total=PING_TIMEOUT_S)
        unhealthy_since: float | None = None
        try:
            while worker.alive:
                healthy = False
                try:
                    async with session.get(url, headers=keyed, timeout=timeout) as resp:
                        await resp.read()
                        healthy = resp.status == 200
                        worker.last_ping = str(resp.status)
                except TimeoutError:
                    worker.last_ping = f"no answer in {PING_TIMEOUT_S:g}s"
                except aiohttp.ClientError as err:
                    worker.last_ping = f"no answer ({type(err).__name__})"
                if healthy != worker.healthy:
                    worker.healthy = healthy
                    self.ep.notify()
                if healthy and worker.state is WorkerState.STARTING:
                    self.runtime.worker_ready(self.ep, worker)
                if healthy or worker.state is not WorkerState.READY:
                    unhealthy_since = None
                elif unhealthy_since is None:
                    unhealthy_since = time.monotonic()
                elif time.monotonic() - unhealthy_since > UNHEALTHY_KILL_S:
                    log.warning(
                        "worker %s has failed /ping for %.0fs: killed", worker.id, UNHEALTHY_KILL_S
                    )
                    self.runtime.supervisor.kill(worker)
                    unhealthy_since = None
                await asyncio.sleep(PING_READY_S if worker.ready_at else PING_STARTING_S)
        finally:
            self._watchers.pop(worker.id, None)
            self._last_pick.pop(worker.id, None)

    def _pick(self) -> Worker | None:
        """The ready worker with the fewest requests in flight (ties: least recently used),
        preferring the current spec's workers during a rolling update."""
        candidates = [
            w for w in self.ep.workers.values() if w.healthy and w.state is WorkerState.READY
        ]
        if not candidates:
            return None
        current = [w for w in candidates if w.generation == self.ep.generation]
        pool = current or candidates
        worker = min(pool, key=lambda w: (w.in_flight, self._last_pick.get(w.id, -1)))
        self._last_pick[worker.id] = next(self._picks)
        return worker

    async def _acquire(self) -> tuple[Worker | None, dict[str, Any]]:
        """A ready worker, waiting for one (and asking for a cold start) if there is none."""
        worker = self._pick()
        if worker is not None:
            return worker, {}
        ep = self.ep
        if ep.spec.workers_max <= 0:
            return None, {"reason": "the endpoint has workersMax 0"}
        asked = time.monotonic()
        asked_wall = time.time()
        deadline = asked + self.runtime.settings.lb_ready_wait_s
        ep.lb_waiting += 1
        self.runtime.kick()
        try:
            while not self.closing and not ep.removed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                await ep.changed(remaining)
                worker = self._pick()
                if worker is not None:
                    return worker, {}
                error = ep.last_error
                if error and error.get("at", 0) >= asked_wall:
                    # A worker failed while this request waited: say so now, not at timeout.
                    return None, {"reason": "a worker failed to start", "lastError": error}
        finally:
            ep.lb_waiting -= 1
        detail: dict[str, Any] = {
            "reason": f"none ready after {round(time.monotonic() - asked, 1)}s"
        }
        if ep.last_error:
            detail["lastError"] = ep.last_error
        return None, detail

    # -- requests ---------------------------------------------------------------------------

    def authorized(self, header: str | None) -> bool:
        """``Authorization: Bearer <key>`` (or the raw key) with the platform's API key."""
        return key_matches(header, self.runtime.config.api_key)

    @contextlib.asynccontextmanager
    async def upstream(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        body: Any,
        peer: str | None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        """The response of a ready worker to ``method target`` (path and query), streamed.

        Raises :class:`ProxyError` when no worker can answer (the caller turns it into an error
        response); errors after the response started belong to the caller.
        """
        if self.closing:
            raise ProxyError(503, {"error": "the platform is shutting down"})
        worker, detail = await self._acquire()
        if worker is None:
            raise ProxyError(
                503,
                {
                    "error": "no worker ready",
                    "endpointId": self.ep.id,
                    "workers": reporting.health(self.ep, self.runtime.jobs)["workers"],
                    **detail,
                },
            )
        session = self.runtime.session
        assert session is not None
        # The API key stays here: user code has no use for it.
        forward = {
            k: v
            for k, v in headers.items()
            if k.lower() not in HOP_BY_HOP
            and k.lower() not in ("authorization", "x-flash-worker-key", "x-request-id")
        }
        # The request's id (the caller's, or a new one) goes to the worker, which logs it, puts
        # it on its answer and on every cross-endpoint call it makes.
        forward["X-Request-ID"] = request_id_of(headers.get("x-request-id")) or uuid.uuid4().hex
        previous = headers.get("X-Forwarded-For")
        forward["X-Forwarded-For"] = f"{previous}, {peer or ''}" if previous else peer or ""
        attempts = 0
        while True:
            chosen = worker
            url = f"http://{self.runtime.config.host}:{chosen.port}{target}"
            if chosen.key:
                forward[WORKER_KEY_HEADER] = chosen.key
            chosen.in_flight += 1
            started = False
            try:
                async with session.request(
                    method,
                    url,
                    headers=forward,
                    data=body,
                    allow_redirects=False,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=5),
                ) as response:
                    started = True
                    yield response
                    return
            except aiohttp.ClientConnectorError as err:
                if started:
                    raise
                # Nothing was sent: another worker may take it.
                chosen.healthy = False
                attempts += 1
                retry = self._pick() if attempts <= CONNECT_RETRIES else None
                if retry is None:
                    raise ProxyError(
                        502, {"error": f"worker {chosen.id} unreachable: {err}"}
                    ) from err
                worker = retry
            except (aiohttp.ClientError, TimeoutError) as err:
                if started:
                    raise
                raise ProxyError(502, {"error": f"worker {chosen.id} failed: {err}"}) from err
            finally:
                chosen.in_flight -= 1
                chosen.last_active = time.monotonic()

    async def forward(self, request: Request, target: str) -> Response:
        """Pass ``request`` to a ready worker as ``target`` (path and query); stream back its
        answer. The endpoint's own port and the platform's alias both come here."""
        if not self.authorized(request.headers.get("authorization")):
            self._counted(401, 0.0)
            return transport.json_response(401, UNAUTHORIZED_BODY)
        started = time.perf_counter()
        context = self.upstream(
            request.method,
            target,
            request.headers,
            await transport.request_body(request),
            request.client.host if request.client else None,
        )
        try:
            upstream = await context.__aenter__()
        except ProxyError as err:
            self._counted(err.status, time.perf_counter() - started)
            return transport.json_response(err.status, err.body)
        self._counted(upstream.status, time.perf_counter() - started)
        return await transport.relay(upstream, lambda: context.__aexit__(None, None, None))

    def _counted(self, status: int, seconds: float) -> None:
        labels = (("endpoint", self.ep.id), ("name", self.ep.spec.name))
        metrics = self.runtime.metrics
        metrics.count("flash_lb_requests_total", (*labels, ("status", str(status))))
        metrics.observe("flash_lb_request_seconds", labels, seconds)


async def _forward_to(
    runtime: BalancerHost, endpoint_id: str, request: Request, target: str
) -> Response:
    ep = runtime.endpoint(endpoint_id)
    if not key_matches(request.headers.get("authorization"), runtime.config.api_key):
        return transport.json_response(401, UNAUTHORIZED_BODY)
    balancer = ep.balancer if ep is not None else None
    if not isinstance(balancer, Balancer):
        return transport.json_response(
            404, {"error": f"load-balanced endpoint {endpoint_id!r} not found"}
        )
    if request.url.query:
        target += "?" + request.url.query
    return await balancer.forward(request, target)


def alias_routes(runtime: BalancerHost) -> list[BaseRoute]:
    """``{platform}/lb/{endpoint_id}/{path}``: a load-balanced endpoint through the platform's
    own port, for clients that derive an endpoint's URL from its id alone (the deployer, and
    cross-endpoint calls, as ``https://{id}.api.runpod.ai`` is derived on Runpod). The
    endpoint's own base URL (``Runtime.url_of``) is the same routes without the prefix."""

    async def alias(request: Request) -> Response:
        target = "/" + request.path_params.get("path", "")
        return await _forward_to(runtime, request.path_params["endpoint_id"], request, target)

    return [
        Route("/lb/{endpoint_id}", alias, methods=METHODS),
        Route("/lb/{endpoint_id}/{path:path}", alias, methods=METHODS),
    ]


def by_subdomain(
    app: ASGIApp,
    runtime: BalancerHost,
    resolve: Callable[[str, str, str], str | None] | None = None,
) -> ASGIApp:
    """Serves ``{endpoint_id}.{host}`` on the platform's port: the URL shape Runpod gives a
    load-balanced endpoint (``https://{id}.api.runpod.ai``), which runpod-flash derives from
    ``RUNPOD_ENDPOINT_BASE_URL`` and records. A request whose Host header's first label is a
    load-balanced endpoint's id goes to that endpoint; any other goes to ``app``. The label
    ``flash`` is the Runpod SDK 2.0's sentinel: the endpoint is the one its ``X-Flash-App``,
    ``X-Flash-Environment`` and ``X-Flash-Endpoint`` headers name (``resolve``)."""

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = next((v for k, v in scope["headers"] if k == b"host"), b"").decode("latin-1")
            label, dot, rest = host.partition(".")
            if label == SENTINEL_ID and dot and rest and resolve is not None:
                label = _sentinel(scope, resolve) or label
            ep = runtime.endpoint(label) if dot and rest else None
            if ep is not None and ep.spec.type == "lb":
                request = Request(scope, receive)
                response = await _forward_to(runtime, label, request, request.url.path)
                await response(scope, receive, send)
                return
        await app(scope, receive, send)

    return asgi


def _sentinel(scope: Scope, resolve: Callable[[str, str, str], str | None]) -> str | None:
    headers = {
        k.decode("latin-1"): v.decode("latin-1")
        for k, v in scope["headers"]
        if k.startswith(b"x-flash-")
    }
    names = sentinel_names(headers)
    return resolve(*names) if names is not None else None
