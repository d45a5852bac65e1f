"""Worker output in the ``flash run`` terminal: the local platform's worker logs, tailed.

The platform writes each worker's stdout and stderr to ``{FLASH_HOME}/platform/logs/{endpoint
id}/{worker id}.log`` (``flash logs`` reads the same files). The tailer follows the files of the
live endpoints and prints each complete line as ``[endpoint name] line``; lines a worker writes
while serving a request already start with the request's id (``worker/request_context.py``).
Files that existed before an endpoint was first tracked are skipped (old sessions' output);
a file that shrank was copy-truncated by the platform's log rotation and is read from its start.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from pathlib import Path

from .terminal import Terminal

POLL_S = 0.1
MAX_READ = 1 << 20  # bytes read from one file per poll


@dataclass
class _File:
    offset: int
    pending: bytes = b""  # an incomplete last line


@dataclass
class _Tracked:
    label: str
    directory: Path
    files: dict[Path, _File] = field(default_factory=dict)


class LogTailer:
    """Follows the worker logs of the endpoints given to :meth:`track`."""

    def __init__(self, logs_dir: Path, terminal: Terminal) -> None:
        self.logs_dir = logs_dir
        self.terminal = terminal
        self._tracked: dict[str, _Tracked] = {}

    def track(self, endpoints: dict[str, str]) -> None:
        """Follow exactly these endpoints (``{endpoint id: label}``)."""
        for endpoint_id in list(self._tracked):
            if endpoint_id not in endpoints:
                del self._tracked[endpoint_id]
        for endpoint_id, label in endpoints.items():
            tracked = self._tracked.get(endpoint_id)
            if tracked is not None:
                tracked.label = label
                continue
            tracked = _Tracked(label, self.logs_dir / endpoint_id)
            for path in self._logs(tracked.directory):
                with contextlib.suppress(OSError):
                    tracked.files[path] = _File(path.stat().st_size)
            self._tracked[endpoint_id] = tracked

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            self.poll()
            await asyncio.sleep(POLL_S)

    def poll(self) -> None:
        """Print what was appended since the last poll."""
        for tracked in list(self._tracked.values()):
            for path in self._logs(tracked.directory):
                state = tracked.files.setdefault(path, _File(0))
                for line in self._read(path, state):
                    self.terminal.worker_line(tracked.label, line)

    @staticmethod
    def _logs(directory: Path) -> list[Path]:
        try:
            return sorted(directory.glob("*.log"))
        except OSError:
            return []

    @staticmethod
    def _read(path: Path, state: _File) -> list[str]:
        try:
            size = path.stat().st_size
            if size < state.offset:  # copy-truncated
                state.offset, state.pending = 0, b""
            if size == state.offset:
                return []
            with open(path, "rb") as f:
                f.seek(state.offset)
                data = f.read(MAX_READ)
        except OSError:
            return []
        state.offset += len(data)
        data = state.pending + data
        *lines, state.pending = data.split(b"\n")
        return [line.decode(errors="replace").rstrip("\r") for line in lines]
