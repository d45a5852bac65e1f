"""How a worker writes its log: one line per record, as text (default) or JSON
(``FLASH_LOG_FORMAT=json``), and the load-balanced worker's request lines.

Text: ``2026-12-01T14:00:00.123Z INFO flash_runtime.worker [<id>] message``, the ``[<id>]`` part
while a request or job is current (``request_context``: the job id, then the request id it was
submitted with, if any). JSON: one object a line with ``time``, ``level``, ``logger``,
``message``, ``endpoint`` (``RUNPOD_ENDPOINT_ID``), ``worker`` (``RUNPOD_POD_ID``), ``request_id``
and ``job_id`` when there are, and ``exception`` (the formatted traceback) when there is one.
What user code prints during a request gets the same time and id (``request_context``).

Request lines (``METHOD path status duration``, at INFO on ``flash_runtime.access``) are
formatted without the logging machinery, after the request, and written in batches (at most
:data:`FLUSH_S` late), so a busy worker pays one write for many requests;
``FLASH_LOG_REQUESTS=0`` turns them off.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, TextIO

from . import request_context

FORMAT_ENV = "FLASH_LOG_FORMAT"
ACCESS_LOGGER = "flash_runtime.access"
FLUSH_S = 0.2
_MILLIS = [f".{ms:03d}Z" for ms in range(1000)]


def json_mode(env: Mapping[str, str]) -> bool:
    return env.get(FORMAT_ENV, "").strip().lower() == "json"


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        tag = request_context.tag()
        line = f"{request_context.utc_time(record.created)} {record.levelname} {record.name} {tag}{record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def __init__(self, endpoint: str, worker: str) -> None:
        super().__init__()
        self.where = {k: v for k, v in (("endpoint", endpoint), ("worker", worker)) if v}

    def format(self, record: logging.LogRecord) -> str:
        import orjson

        entry: dict[str, Any] = {
            "time": request_context.utc_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **self.where,
            **request_context.ids(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def setup(env: Mapping[str, str], level: str) -> None:
    """Configure the root logger for a worker (call once, after ``request_context.install``)."""
    raw = sys.stderr.wrapped if isinstance(sys.stderr, request_context.TaggedStream) else sys.stderr
    handler = logging.StreamHandler(raw)  # the raw stream: the formatter tags the line itself
    if json_mode(env):
        handler.setFormatter(
            JsonFormatter(env.get("RUNPOD_ENDPOINT_ID", ""), env.get("RUNPOD_POD_ID", ""))
        )
    else:
        handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level if level in logging.getLevelNamesMapping() else "INFO")


class RequestLog:
    """The load-balanced worker's request lines, batched (see the module's documentation).

    The request path pays for a tuple appended to a list; a timer on the server's event loop
    (armed by the first line after a flush: none while idle) formats and writes what piled up
    :data:`FLUSH_S` later. No thread: nothing competes with the server for the GIL.
    """

    def __init__(self, env: Mapping[str, str], stream: TextIO | None = None) -> None:
        self.enabled = env.get("FLASH_LOG_REQUESTS", "1").strip() != "0" and logging.getLogger(
            ACCESS_LOGGER
        ).isEnabledFor(logging.INFO)
        self.json = json_mode(env)
        self.endpoint = env.get("RUNPOD_ENDPOINT_ID", "")
        self.worker = env.get("RUNPOD_POD_ID", "")
        raw = sys.stderr
        self.stream = stream or (
            raw.wrapped if isinstance(raw, request_context.TaggedStream) else raw
        )
        self._pending: list[tuple[float, str, str, int, float, str]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._stamp = ""

    def _time(self, now: float) -> str:
        second = int(now)
        if second != self._second:  # one strftime a second, not one a line
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return self._stamp + _MILLIS[int((now - second) * 1000)]

    def record(self, method: str, path: str, status: int, seconds: float, request_id: str) -> None:
        """One request line (called on the server's event loop for every request answered)."""
        self._pending.append((time.time(), method, path, status, seconds, request_id))
        if self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(FLUSH_S, self.flush)
            except RuntimeError:  # no loop (a test calling it directly): written at once
                self.flush()

    def _format(self, item: tuple[float, str, str, int, float, str]) -> str:
        now, method, path, status, seconds, request_id = item
        if not self.json:
            return (
                f"{self._time(now)} INFO {ACCESS_LOGGER} [{request_id}] "
                f"{method} {path} {status} {seconds * 1000:.1f}ms"
            )
        import orjson

        return orjson.dumps(
            {
                "time": self._time(now),
                "level": "INFO",
                "logger": ACCESS_LOGGER,
                "message": f"{method} {path} {status} {seconds * 1000:.1f}ms",
                "endpoint": self.endpoint,
                "worker": self.worker,
                "request_id": request_id,
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(seconds * 1000, 3),
            }
        ).decode()

    def flush(self) -> None:
        self._timer = None
        pending, self._pending = self._pending, []
        if pending:
            try:
                self.stream.write("\n".join(map(self._format, pending)) + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.flush()
