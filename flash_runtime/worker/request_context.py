"""The request a worker is serving, written at the start of the lines it logs or prints.

A load-balanced request (its ``X-Request-ID``) or a queue job (its id) sets :data:`current` for
as long as it runs; the context travels into the worker threads that run plain ``def``
functions. :func:`install` wraps ``sys.stdout`` and ``sys.stderr`` so that every line written
while a request is current starts with ``[<id>] ``: log records (the logging handler writes to
the wrapped ``sys.stderr``) and the user's ``print()`` alike. ``flash run`` shows these lines in
its terminal, and ``flash logs`` in the worker's log.

Cost: a request pays one context-variable ``set`` and ``reset`` (well under a microsecond); a
write pays one context-variable lookup, and string work only while a request is current. Lines
written by threads the user starts themselves carry no id (they do not inherit the context).
``FLASH_LOG_REQUEST_ID=0`` leaves the streams untouched.
"""

from __future__ import annotations

import sys
from contextvars import ContextVar
from typing import Any, TextIO

current: ContextVar[str | None] = ContextVar("flash_request_id", default=None)


class TaggedStream:
    """A text stream that starts each line written during a request with ``[request id] ``.

    Everything but :meth:`write` and :meth:`writelines` is the wrapped stream's.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._line_start = True

    @property
    def wrapped(self) -> TextIO:
        """The stream written to."""
        return self._stream

    def write(self, text: str) -> int:
        """Write ``text``, each of its lines tagged with the current request id if any."""
        if not text:
            return 0
        request_id = current.get()
        if request_id is None:
            self._line_start = text[-1] == "\n"
            return self._stream.write(text)
        prefix = f"[{request_id}] "
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


def install() -> None:
    """Wrap ``sys.stdout`` and ``sys.stderr`` (once); call before logging is configured."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, TaggedStream):
            setattr(sys, name, TaggedStream(stream))
