"""The request a worker is serving, written at the start of the lines it logs or prints.

A load-balanced request (its ``X-Request-ID``) or a queue job (its id, and the request id it was
submitted with: :data:`request`) sets :data:`current` for as long as it runs; the context
travels into the worker threads that run plain ``def`` functions, and on into the
cross-endpoint calls it makes (:func:`outgoing`). :func:`install` wraps ``sys.stdout`` and
``sys.stderr`` so that every line the user's code prints while a request is current starts with
``[<id>] `` (log records are tagged by their formatter, ``logs.py``); with
``FLASH_LOG_FORMAT=json`` each printed line becomes a JSON object instead. ``flash run`` shows
these lines in its terminal, and ``flash logs`` in the worker's log.

Cost: a request pays one context-variable ``set`` and ``reset`` (well under a microsecond); a
write pays one context-variable lookup, and string work only while a request is current. Lines
written by threads the user starts themselves carry no id (they do not inherit the context).
``FLASH_LOG_REQUEST_ID=0`` leaves the streams untouched.
"""

from __future__ import annotations

import sys
import time
from contextvars import ContextVar
from typing import Any, TextIO

current: ContextVar[str | None] = ContextVar("flash_request_id", default=None)
# A queue job's: the request id it was submitted with (``X-Request-ID`` of its ``/run``), if any;
# ``current`` is then the job's id.
request: ContextVar[str | None] = ContextVar("flash_job_request_id", default=None)
is_job: ContextVar[bool] = ContextVar("flash_is_job", default=False)


def utc_time(seconds: float) -> str:
    """``2026-12-01T14:00:00.123Z``: the time on every log line."""
    whole = int(seconds)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{stamp}.{int((seconds - whole) * 1000):03d}Z"


def ids() -> dict[str, str]:
    """``request_id``/``job_id`` of what is current, for JSON lines."""
    out = {}
    job, submitted = current.get(), request.get()
    if is_job.get():
        if job:
            out["job_id"] = job
        if submitted:
            out["request_id"] = submitted
    elif job:
        out["request_id"] = job
    return out


def tag() -> str:
    """``[<id>] `` (``[<job id> <request id>] `` for a job submitted with one), or ""."""
    job = current.get()
    if job is None:
        return ""
    submitted = request.get()
    return f"[{job} {submitted}] " if submitted else f"[{job}] "


def outgoing() -> str | None:
    """The request id a cross-endpoint call made now carries on (``X-Request-ID``)."""
    return request.get() or current.get()


class TaggedStream:
    """A text stream that starts each line written during a request with ``[request id] ``.

    Everything but :meth:`write` and :meth:`writelines` is the wrapped stream's.
    """

    def __init__(self, stream: TextIO, json_fields: dict[str, str] | None = None) -> None:
        self._stream = stream
        self._line_start = True
        self._json = json_fields  # FLASH_LOG_FORMAT=json: each line becomes one JSON object
        self._partial = ""

    def _write_json(self, text: str) -> int:
        import orjson

        assert self._json is not None
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        if lines:
            base = {"time": utc_time(time.time()), "level": "INFO", "logger": "print",
                    **self._json, **ids()}  # fmt: skip
            out = "".join(orjson.dumps({**base, "message": ln}).decode() + "\n" for ln in lines)
            self._stream.write(out)
        return len(text)

    @property
    def wrapped(self) -> TextIO:
        """The stream written to."""
        return self._stream

    def write(self, text: str) -> int:
        """Write ``text``, each of its lines tagged with the current request id if any."""
        if not text:
            return 0
        if self._json is not None:
            return self._write_json(text)
        prefix = tag()
        if not prefix:
            self._line_start = text[-1] == "\n"
            return self._stream.write(text)
        ends_line = text[-1] == "\n"
        body = text[:-1] if ends_line else text
        tagged = (prefix if self._line_start else "") + body.replace("\n", "\n" + prefix)
        self._line_start = ends_line
        self._stream.write(tagged + "\n" if ends_line else tagged)
        return len(text)

    def writelines(self, lines: Any) -> None:
        """Write each of ``lines`` (as :meth:`write`)."""
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def install(json_fields: dict[str, str] | None = None) -> None:
    """Wrap ``sys.stdout`` and ``sys.stderr`` (once); ``json_fields`` (endpoint, worker): write
    each line as a JSON object with them (``FLASH_LOG_FORMAT=json``)."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, TaggedStream):
            setattr(sys, name, TaggedStream(stream, json_fields))
