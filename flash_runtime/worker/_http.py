"""uvicorn's httptools protocol, sending a response's head in the same write as its body.

uvicorn writes the status line and headers when the app sends ``http.response.start`` and the
body when it sends ``http.response.body``: two ``write`` system calls for every response, one
of the three a request costs the worker (with the read of the request). When the head says how
long the body is (``Content-Length``, which every JSON answer of the worker has), this protocol
holds the head back and writes it with the first part of the body. A chunked response (a
stream) has its head written at once, as uvicorn does, so a stream's client sees the headers
before the first item.

Everything else is uvicorn's: the cycle class is uvicorn's ``RequestResponseCycle`` with
``send`` wrapped. The wrapper lets uvicorn's ``send`` do all its checks and build the bytes,
and catches what it writes by giving it, for that one call, a transport that keeps the bytes.
uvicorn's ``send`` awaits only to wait for a paused transport to drain; the wrapper waits for
that first, so the call it wraps runs without yielding and nothing else sees the stand-in.
This leans on that cycle's attributes (``transport``, ``flow``, ``disconnected``,
``response_started``, ``chunked_encoding``), stable across uvicorn's releases but not its
public API: ``tests/worker/test_http_protocol.py`` checks it against the uvicorn installed, and
the worker falls back to uvicorn's own protocol when this module cannot be imported.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle


class _Keep:
    """Stands in for the transport while uvicorn writes a response's head: keeps the bytes."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data


class _Prefixed:
    """Stands in for the transport while uvicorn writes the first part of a body: writes the
    held head and that part together."""

    __slots__ = ("head", "transport")

    def __init__(self, transport: asyncio.Transport, head: bytes) -> None:
        self.transport = transport
        self.head: bytes | None = head

    def write(self, data: bytes) -> None:
        head, self.head = self.head, None
        self.transport.write(head + data if head else data)

    def close(self) -> None:
        self.transport.close()


class HeadWithBodyCycle(RequestResponseCycle):
    """A request's cycle whose response head goes out with the body (module docstring)."""

    held_head: bytes | None = None

    async def send(self, message: Any) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        transport = self.transport
        if message["type"] == "http.response.start" and not self.response_started:
            keep = _Keep()
            self.transport = keep  # type: ignore[assignment]
            try:
                await super().send(message)  # does not await: the transport is not paused
            finally:
                self.transport = transport
            if keep.data and self.chunked_encoding is False:
                self.held_head = keep.data
            elif keep.data:
                transport.write(keep.data)
            return
        head = self.held_head
        if head is None:
            await super().send(message)
            return
        self.held_head = None
        prefixed = _Prefixed(transport, head)
        self.transport = prefixed  # type: ignore[assignment]
        try:
            await super().send(message)  # does not await either
        finally:
            self.transport = transport
        if prefixed.head is not None and not self.disconnected:
            # nothing of the body was written (a HEAD request's, say): the head goes alone
            transport.write(prefixed.head)


class HeadWithBodyProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose request cycles are :class:`HeadWithBodyCycle`."""

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        # the cycle uvicorn just made; its task has not run yet (it is only scheduled)
        if type(self.cycle) is RequestResponseCycle:
            self.cycle.__class__ = HeadWithBodyCycle
