"""Worker output in the ``flash run`` terminal: the local platform's worker logs, followed.

The tailer asks the platform for the lines its live endpoints' workers wrote since it last
asked (``GET /platform/logs`` with the platform key and the cursor of the previous answer:
the same lines ``flash logs`` prints, merged by time) and prints each as written, as
``[endpoint name] line``; lines a worker writes while serving a request carry the request's id
(``worker/request_context.py``). What the workers wrote before an endpoint was first tracked is
skipped (earlier sessions' output); the platform reads a copy-truncated file from its start.
"""

from __future__ import annotations

import contextlib
from typing import Any

import aiohttp
import orjson

from .terminal import Terminal

POLL_S = 0.1


class LogTailer:
    """Follows the worker logs of the endpoints given to :meth:`track`, through the platform."""

    def __init__(self, platform_url: str, api_key: str, terminal: Terminal) -> None:
        self.url = f"{platform_url.rstrip('/')}/platform/logs"
        self.headers = {"Authorization": f"Bearer {api_key}"}
        self.terminal = terminal
        self._labels: dict[str, str] = {}
        self._cursor: dict[str, Any] | None = None
        self._new: set[str] = set()  # tracked, not yet read up to the present
        self._session: aiohttp.ClientSession | None = None

    def track(self, endpoints: dict[str, str]) -> None:
        """Follow exactly these endpoints (``{endpoint id: label}``)."""
        self._new |= set(endpoints) - set(self._labels)
        self._labels = dict(endpoints)

    async def run(self) -> None:
        """Poll until cancelled."""
        import asyncio

        try:
            while True:
                await self.poll()
                await asyncio.sleep(POLL_S)
        finally:
            await self.close()

    async def _ask(self, endpoints: list[str], **params: str) -> dict[str, Any] | None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        query = [("endpoint", e) for e in endpoints] + list(params.items())
        try:
            async with self._session.get(self.url, params=query, headers=self.headers) as answer:
                if answer.status != 200:
                    return None
                found: dict[str, Any] = orjson.loads(await answer.read())
                return found
        except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
            return None  # the platform restarting: asked again at the next poll

    async def poll(self) -> None:
        """Print what was written since the last poll."""
        if not self._labels:
            return
        if self._new:  # start newly tracked endpoints at the present
            skipped = await self._ask(sorted(self._new), tail="0")
            if skipped is None:
                return
            self._cursor = {**(self._cursor or {}), **skipped["cursor"]}
            self._new.clear()
        params = {"raw": "1"}
        if self._cursor:
            params["cursor"] = orjson.dumps(self._cursor).decode()
        found = await self._ask(sorted(self._labels), **params)
        if found is None:
            return
        self._cursor = found["cursor"]
        for line in found["lines"]:
            label = self._labels.get(line["endpoint"])
            if label is not None:
                self.terminal.worker_line(label, line["raw"])

    async def close(self) -> None:
        if self._session is not None:
            with contextlib.suppress(Exception):
                await self._session.close()
            self._session = None
