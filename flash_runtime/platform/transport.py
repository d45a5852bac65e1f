"""The platform's HTTP plumbing, shared by the balancers, the platform app and the dev server.

One server stack: Starlette apps served by uvicorn. The platform process runs its main app on
``PlatformConfig.url`` and one :class:`EmbeddedServer` per load-balanced endpoint on the same
event loop (a socket and a task each, no thread). One relay: :func:`relay` streams a worker's
response back to the caller as it arrives, whoever proxied it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator
from typing import Any

import aiohttp
import orjson
import uvicorn
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp

from ..protocol.wire import HOP_BY_HOP


def json_response(status: int, body: dict[str, Any]) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def passed_headers(
    upstream: aiohttp.ClientResponse, drop: Collection[str] = HOP_BY_HOP
) -> list[tuple[str, str]]:
    """The worker's response headers a proxy passes on (all but ``drop``, lower-case)."""
    return [(k, v) for k, v in upstream.headers.items() if k.lower() not in drop]


# Bodies up to this size with a declared length are read whole rather than streamed: one send
# with a length instead of a chunked relay, the cheaper way for the small bodies most routes get.
WHOLE_BODY_MAX = 256 * 1024


async def request_body(request: Request) -> bytes | AsyncIterator[bytes] | None:
    """What to send upstream for ``request``: nothing, the body read whole (small, with a
    declared length), or the body as a stream."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        if int(declared) == 0:
            return None
        if int(declared) <= WHOLE_BODY_MAX:
            return await request.body()
    elif "chunked" not in request.headers.get("transfer-encoding", ""):
        return None
    return request.stream()


async def relay(
    upstream: aiohttp.ClientResponse,
    finished: Callable[[], Awaitable[object]],
    drop: Collection[str] = HOP_BY_HOP,
) -> Response:
    """``upstream`` (a worker's response) as the caller's: read whole when small and of known
    length, else streamed chunk by chunk as it arrives (SSE, chunked, large bodies).

    ``finished`` runs once the body has been relayed, or the relay ended early (either side
    hung up): it releases the upstream connection and does any accounting. Headers in ``drop``
    are not passed on (the length is set again from the worker's).
    """

    headers = [
        (k.lower().encode("latin-1"), v.encode("latin-1"))
        for k, v in passed_headers(upstream, drop)
    ]
    chunked = "chunked" in upstream.headers.get("Transfer-Encoding", "")
    length = None if chunked else upstream.content_length
    if length is not None and length <= WHOLE_BODY_MAX:
        try:
            data: bytes | None = await upstream.read()
        except aiohttp.ClientError:
            data = None
        finally:
            await finished()
        if data is None:
            return json_response(502, {"error": "the worker's response ended early"})
        whole = Response(data, status_code=upstream.status)
        whole.raw_headers = [*headers, (b"content-length", str(len(data)).encode())]
        return whole

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.content.iter_any():
                yield chunk
        except aiohttp.ClientError:
            pass  # the worker went away mid-response: the response ends here
        finally:
            await finished()

    response = StreamingResponse(body(), status_code=upstream.status)
    response.raw_headers = headers
    if length is not None:
        response.raw_headers.append((b"content-length", str(length).encode()))
    return response


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server inside a process that already has one: no signal handling of its own
    (the platform's server handles signals and shuts the embedded ones down)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Listener:
    """``app`` served on ``host:port`` by an :class:`EmbeddedServer` on the running loop."""

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))  # OSError (port taken) reaches the caller
            sock.listen(1024)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.socket = sock
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(
            app,
            lifespan="off",
            ws="none",
            http="auto",
            log_config=None,
            log_level="warning",
            access_log=False,
            proxy_headers=False,
            server_header=False,
            date_header=False,
            timeout_graceful_shutdown=10,
        )
        self.server = EmbeddedServer(config)
        self._task: asyncio.Task[None] = asyncio.create_task(
            self.server.serve(sockets=[sock]), name=f"listener-{self.port}"
        )

    async def close(self) -> None:
        """Stop accepting, let requests in flight finish (10 s at most), release the port."""
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.socket.close()
