"""The development server's HTTP side: one Starlette app in front of every live endpoint.

Routes (``{endpoint}`` is the endpoint's name as written in ``Endpoint(name=...)``):

* ``GET /``: the app's endpoints and the paths to call them at; ``GET /ping``: the server is up.
* ``GET /docs`` (Swagger UI, its files served from the package) and ``GET /openapi.json``.
* Queue-based endpoints: ``POST /{endpoint}/run``, ``POST /{endpoint}/runsync``,
  ``GET /{endpoint}/status/{job_id}`` (and the rest of the serverless API: ``stream``,
  ``cancel``, ``health``, ``purge-queue``), forwarded to ``{platform}/v2/{id}/...``.
* Load-balanced endpoints: ``/{endpoint}{path}``, any method, forwarded to the endpoint's URL
  with ``{path}`` and the query string, the response streamed through as it comes.

Requests need no key: the server adds the platform's (``Authorization: Bearer ...``). A
load-balanced request without ``X-Request-ID`` gets a short one, which the worker puts on the
lines it logs while serving it, and which the access line in the terminal shows; a queue job is
shown with its job id.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from ..platform.transport import relay
from ..protocol.wire import HOP_BY_HOP as WIRE_HOP_BY_HOP
from ..protocol.wire import bearer

if TYPE_CHECKING:
    from .state import Snapshot
    from .terminal import Terminal


class DevServer(Protocol):
    """What the app asks of the session that serves it (``session.DevServer``)."""

    app_name: str
    snapshot: Snapshot | None
    terminal: Terminal

    @property
    def http(self) -> aiohttp.ClientSession: ...

    @property
    def api_key(self) -> str: ...

    def describe(self) -> dict[str, Any]: ...

    async def openapi(self) -> dict[str, Any]: ...


DOCS_UI = Path(__file__).parent / "docs_ui"
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "init.js": "text/javascript; charset=utf-8",
    "LICENSE": "text/plain; charset=utf-8",
    "NOTICE": "text/plain; charset=utf-8",
    "swagger-ui-bundle.js.LICENSE.txt": "text/plain; charset=utf-8",
}
ALL_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
# The proxies' set, plus the client's Authorization: the dev server adds the key.
HOP_BY_HOP = WIRE_HOP_BY_HOP | {"authorization"}
# What the dev server's own uvicorn sets, on top of what no proxy passes on.
RESPONSE_DROP = WIRE_HOP_BY_HOP | {"trailers", "date", "server"}

DOCS_HTML = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/docs/assets/swagger-ui-bundle.js"></script>
<script src="/docs/assets/init.js"></script>
</body>
</html>
"""


def _json(body: Any, status: int = 200) -> Response:
    return Response(
        orjson.dumps(body, option=orjson.OPT_INDENT_2),
        status_code=status,
        media_type="application/json",
    )


def _error(status: int, message: str, **extra: Any) -> Response:
    return _json({"error": message, **extra}, status)


LOCAL_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


def _hostname(value: str) -> str:
    """``host[:port]`` (or ``[v6]:port``, or an Origin URL) less the scheme and port."""
    value = value.split("://", 1)[-1].split("/", 1)[0].lower()
    if value.startswith("["):
        return value[1 : value.find("]")]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def local_only(app: ASGIApp, also: str | None = None) -> ASGIApp:
    """Refuses (403) a request whose ``Host`` is not this machine's loopback name (or ``also``,
    the address the server was told to listen on) and one whose ``Origin`` is not such a name.

    The dev server adds the platform key to what it forwards, so a page in the developer's
    browser must not reach it: a cross-site request carries a foreign Origin, and DNS
    rebinding a foreign Host.
    """
    allowed = LOCAL_NAMES | ({also.lower()} if also and also not in ("0.0.0.0", "::") else set())

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            headers = dict(scope["headers"])
            host = headers.get(b"host", b"").decode("latin-1")
            origin = headers.get(b"origin", b"").decode("latin-1")
            refused = None
            if _hostname(host) not in allowed:
                refused = f"Host {host!r} is not this machine"
            elif origin and origin != "null" and _hostname(origin) not in allowed:
                refused = f"Origin {origin!r} is another site"
            elif origin == "null":
                refused = "an opaque Origin (a sandboxed page or a file) is another site"
            if refused is not None:
                response = _error(403, f"the dev server answers this machine only: {refused}")
                await response(scope, receive, send)
                return
        await app(scope, receive, send)

    return asgi


def build_app(server: DevServer, host: str | None = None) -> ASGIApp:
    """The ASGI app of the development server ``server`` (listening on ``host``)."""

    async def index(request: Request) -> Response:
        return _json(server.describe())

    async def ping(request: Request) -> Response:
        return _json({"status": "healthy"})

    async def docs(request: Request) -> Response:
        from html import escape

        title = escape(f"{server.app_name} · flash run")
        return Response(DOCS_HTML.format(title=title), media_type="text/html; charset=utf-8")

    async def asset(request: Request) -> Response:
        name = request.path_params["name"]
        media_type = ASSETS.get(name)
        if media_type is None:
            return _error(404, f"no documentation asset {name!r}")
        return FileResponse(
            DOCS_UI / name, media_type=media_type, headers={"Cache-Control": "max-age=3600"}
        )

    async def openapi(request: Request) -> Response:
        return _json(await server.openapi())

    async def forward(request: Request) -> Response:
        return await _forward(server, request)

    routes = [
        Route("/", index, methods=["GET"]),
        Route("/ping", ping, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/docs/assets/{name}", asset, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/{endpoint}", forward, methods=ALL_METHODS),
        Route("/{endpoint}/{rest:path}", forward, methods=ALL_METHODS),
    ]
    return local_only(Starlette(routes=routes), host)


def _forward_headers(request: Request, api_key: str) -> dict[str, str]:
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
    headers.update(bearer(api_key))
    return headers


def _response_headers(upstream: aiohttp.ClientResponse) -> dict[str, str]:
    return {k: v for k, v in upstream.headers.items() if k.lower() not in RESPONSE_DROP}


async def _forward(server: DevServer, request: Request) -> Response:
    name = request.path_params["endpoint"]
    rest = request.path_params.get("rest", "")
    snapshot = server.snapshot
    endpoint = snapshot.endpoints.get(name) if snapshot is not None else None
    body = await request.body()
    if endpoint is None and snapshot is not None:
        # runpod-flash's paths: /{file}/runsync, /{file}/{function}/runsync, /{file}/{route}
        alias = snapshot.aliases.find(request.method, request.url.path)
        if alias is not None:
            endpoint, rest = snapshot.endpoints[alias.resource], alias.rest
            if alias.method is not None:
                body = _with_method(body, alias.method)
    if endpoint is None:
        known = sorted(snapshot.endpoints) if snapshot is not None else []
        return _error(
            404,
            f"no endpoint {name!r} in this app; endpoints: {', '.join(known) or 'none'} "
            "(GET / lists their paths)",
        )
    session = server.http
    headers = _forward_headers(request, server.api_key)
    query = request.url.query
    started = time.perf_counter()
    shown = request.url.path + (f"?{query}" if query else "")
    if endpoint.type == "qb":
        url = f"{endpoint.url}/{rest}" + (f"?{query}" if query else "")
        try:
            async with session.request(
                request.method, url, data=body or None, headers=headers, allow_redirects=False
            ) as upstream:
                data = await upstream.read()
                status, response_headers = upstream.status, _response_headers(upstream)
        except (aiohttp.ClientError, TimeoutError) as err:
            return _unreachable(server, request, shown, started, endpoint.url, err)
        server.terminal.access(
            request.method, shown, status, time.perf_counter() - started, _job_ref(data)
        )
        return Response(data, status_code=status, headers=response_headers)

    request_id = request.headers.get("x-request-id") or uuid.uuid4().hex[:12]
    headers["X-Request-ID"] = request_id
    url = f"{endpoint.url}/{rest}" + (f"?{query}" if query else "")
    try:
        upstream = await session.request(
            request.method, url, data=body or None, headers=headers, allow_redirects=False
        )
    except (aiohttp.ClientError, TimeoutError) as err:
        return _unreachable(server, request, shown, started, endpoint.url, err)

    async def finished() -> None:
        upstream.release()
        server.terminal.access(
            request.method,
            shown,
            upstream.status,
            time.perf_counter() - started,
            f"request {request_id}",
        )

    return await relay(upstream, finished, RESPONSE_DROP)


def _with_method(body: bytes, method: str) -> bytes:
    """A job body for a class endpoint's ``method`` (``{"input": {..., "method": ...}}``)."""
    try:
        job = orjson.loads(body) if body else {}
    except orjson.JSONDecodeError:
        return body  # the endpoint answers 400 to it, as to any body that is not JSON
    if isinstance(job, dict) and isinstance(job.get("input", {}), dict):
        job["input"] = {**job.get("input", {}), "method": method}
        return orjson.dumps(job)
    return body


def _unreachable(
    server: DevServer, request: Request, shown: str, started: float, url: str, err: BaseException
) -> Response:
    server.terminal.access(request.method, shown, 502, time.perf_counter() - started)
    return _error(502, f"cannot reach the endpoint at {url}: {err or type(err).__name__}")


def _job_ref(data: bytes) -> str:
    """``job <id> <status>`` from a serverless API answer, when it is one."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return ""
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        return ""
    status = body.get("status")
    return f"job {body['id']}" + (f" {status}" if isinstance(status, str) else "")
