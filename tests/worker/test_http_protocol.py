"""The worker's HTTP protocol (worker/_http.py): a response's head goes out with its body, over a
real uvicorn on a loopback port, read from a raw socket so what arrives when is visible."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from support import serve_asgi

from flash_runtime.worker._http import HeadWithBodyProtocol

GO = threading.Event()  # set by a test: the app may send the body it holds back


async def app(scope: Any, receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    path, method = scope["path"], scope["method"]
    while (await receive()).get("more_body"):
        pass
    if path == "/stream":  # chunked: no Content-Length
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.to_thread(GO.wait, 10)
        await send({"type": "http.response.body", "body": b"one", "more_body": True})
        await send({"type": "http.response.body", "body": b"two"})
        return
    body = b'{"path":"%s"}' % path.encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if path == "/close":
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if path == "/held":
        await asyncio.to_thread(GO.wait, 10)
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    with serve_asgi(app, http=HeadWithBodyProtocol) as url:
        yield int(url.rsplit(":", 1)[1])


@pytest.fixture
def conn(port: int) -> Iterator[socket.socket]:
    GO.clear()
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    yield sock
    GO.set()
    sock.close()


def _request(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: t\r\n\r\n".encode()


class Reader:
    """Responses read off one connection, what arrived beyond one kept for the next."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buffer = sock, b""

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, f"connection closed after {self.buffer!r}"
        self.buffer += chunk

    def head(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        return head

    def body(self, head: bytes) -> bytes:
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(self.buffer) < length:
            self._more()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return body

    def response(self) -> tuple[bytes, bytes]:
        head = self.head()
        return head, self.body(head)


def _nothing_waiting(sock: socket.socket, wait: float = 0.3) -> bool:
    sock.settimeout(wait)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""  # closed: also nothing
    except TimeoutError:
        return True
    finally:
        sock.settimeout(10)


def test_the_head_waits_for_the_body_and_goes_with_it(conn: socket.socket) -> None:
    conn.sendall(_request("/held"))
    assert _nothing_waiting(conn)  # the app has sent its head, not its body: nothing is out
    GO.set()
    head, body = Reader(conn).response()
    assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: 16" in head
    assert body == b'{"path":"/held"}'


def test_a_stream_gets_its_head_before_its_first_item(conn: socket.socket) -> None:
    conn.sendall(_request("/stream"))
    reader = Reader(conn)
    head = reader.head()  # while the app holds its first item
    assert b"transfer-encoding: chunked" in head and reader.buffer == b""
    GO.set()
    while not reader.buffer.endswith(b"0\r\n\r\n"):
        reader._more()
    assert reader.buffer == b"3\r\none\r\n3\r\ntwo\r\n0\r\n\r\n"


def test_keep_alive_pipelining_head_and_close(conn: socket.socket) -> None:
    # three requests in one write: answered in order on the one connection
    conn.sendall(_request("/a") + _request("/b", "HEAD") + _request("/c"))
    reader = Reader(conn)
    assert reader.response()[1] == b'{"path":"/a"}'
    head = reader.head()  # HEAD: its head alone, no body
    assert head.startswith(b"HTTP/1.1 200") and b"content-length: 13" in head
    head, body = reader.response()
    assert head.startswith(b"HTTP/1.1 200") and body == b'{"path":"/c"}'
    conn.sendall(_request("/close"))
    head, body = reader.response()
    assert b"connection: close" in head and body == b'{"path":"/close"}'
    assert conn.recv(1) == b""  # and the connection is closed
