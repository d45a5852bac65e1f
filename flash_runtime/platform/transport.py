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


def relay(
    upstream: aiohttp.ClientResponse,
    finished: Callable[[], Awaitable[object]],
    drop: Collection[str] = HOP_BY_HOP,
) -> StreamingResponse:
    """``upstream`` (a worker's response) as the caller's, streamed chunk by chunk.

    ``finished`` runs once the body has been relayed, or the relay ended early (either side
    hung up): it releases the upstream connection and does any accounting. Headers in ``drop``
    are not passed on (the length is set again from the worker's).
    """

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.content.iter_any():
                yield chunk
        except aiohttp.ClientError:
            pass  # the worker went away mid-response: the response ends here
        finally:
            await finished()

    response = StreamingResponse(body(), status_code=upstream.status)
    response.raw_headers = [
        (k.lower().encode("latin-1"), v.encode("latin-1"))
        for k, v in passed_headers(upstream, drop)
    ]
    chunked = "chunked" in upstream.headers.get("Transfer-Encoding", "")
    if upstream.content_length is not None and not chunked:
        response.raw_headers.append((b"content-length", str(upstream.content_length).encode()))
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
