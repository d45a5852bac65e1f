"""Client mode: ``Endpoint(id="...")`` calls an endpoint that is already deployed.

As in runpod-flash: ``await ep.run(input)`` submits a job and returns an :class:`EndpointJob`
(``await job.wait()``, ``job.output``), ``await ep.runsync(input)`` waits for it, ``await
ep.cancel(job_id)`` cancels one, and ``await ep.post("/path", data)`` (``get``, ``put``,
``delete``, ``patch``) calls a load-balanced endpoint's route and returns its JSON.

Where the endpoint is: a script uses the platform ``flash deploy`` would use (the local platform
unless the user has a Runpod key; ``FLASH_PLATFORM`` chooses); a worker uses its own
``RUNPOD_ENDPOINT_BASE_URL`` and ``RUNPOD_API_KEY``. Queue endpoints are at
``{base}/{id}``; load-balanced ones at ``https://{id}.api.runpod.ai`` on Runpod and at
``{platform}/lb/{id}`` on the local platform.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Generator
from typing import Any
from urllib.parse import urlsplit

import orjson

from ..errors import FlashError, RemoteCallError
from ..protocol.target import Target
from ..protocol.wire import FINAL_STATUSES, bearer

POLL_PAUSE_S = (0.25, 5.0)  # first and longest pause between status polls (x1.5 each time)
HOLD_MS = 30_000  # how long one status poll asks the server to hold it


def _target(endpoint_id: str) -> Target:
    if os.environ.get("FLASH_RESOURCE_NAME"):
        from .context import worker_target

        key = (os.environ.get("RUNPOD_API_KEY") or "").strip()
        if not key:
            raise RemoteCallError(
                endpoint_id, "unauthorized", "this worker has no RUNPOD_API_KEY; set it in its env"
            )
        return worker_target(os.environ, key)
    from ..protocol.target import resolve

    try:
        return resolve(os.environ.get("FLASH_PLATFORM") or None)
    except FlashError as err:  # no key for Runpod: say which call needed it
        raise RemoteCallError(endpoint_id, "unauthorized", str(err)) from None


def queue_url(target: Target, endpoint_id: str) -> str:
    return f"{target.queue_url_base}/{endpoint_id}"


def lb_url(target: Target, endpoint_id: str) -> str:
    """A load-balanced endpoint's base URL."""
    if target.lb_url_template:
        return target.lb_url_template.format(id=endpoint_id)
    if target.platform == "local":
        return f"{target.api_url}/lb/{endpoint_id}"
    base = target.queue_url_base
    host = urlsplit(base).netloc
    if host.startswith("api.runpod.ai"):
        return f"https://{endpoint_id}.{host}"
    return f"{base.removesuffix('/v2')}/lb/{endpoint_id}"  # a local platform, seen by a worker


async def request(
    endpoint_id: str, method: str, url: str, body: Any = None, timeout: float = 60.0
) -> Any:
    """One authorised request; its JSON answer, or a RemoteCallError saying what went wrong."""
    import aiohttp

    from .client import default_client

    target = _target(endpoint_id)
    headers = {**bearer(target.api_key), "Content-Type": "application/json"}
    data = None if body is None else orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)
    session = await default_client().session()
    try:
        async with session.request(
            method, url, data=data, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)
        ) as response:
            raw = await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as err:
        raise RemoteCallError(
            endpoint_id, "unavailable", f"{method} {url} failed: {err or type(err).__name__}"
        ) from None
    if status in (401, 403):
        raise RemoteCallError(endpoint_id, "unauthorized", f"{url} refused the key ({status})")
    if status == 404:
        raise RemoteCallError(endpoint_id, "not_deployed", f"{method} {url} answered 404")
    if status >= 400:
        text = raw[:300].decode(errors="replace")
        raise RemoteCallError(endpoint_id, "remote_error", f"{method} {url}: {status} {text}")
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode(errors="replace")


class EndpointJob:
    """A job submitted with ``Endpoint(id=...).run()`` or ``runsync()``.

    ``id``, ``output``, ``error`` and ``done`` read the job as last seen; ``await job.status()``
    asks again, ``await job.wait(timeout)`` until it finishes, ``await job.cancel()`` cancels it.
    """

    def __init__(self, data: dict[str, Any], endpoint_id: str) -> None:
        self._data = data
        self.endpoint_id = endpoint_id

    @property
    def id(self) -> str:
        return str(self._data.get("id", ""))

    @property
    def output(self) -> Any:
        return self._data.get("output")

    @property
    def error(self) -> Any:
        return self._data.get("error")

    @property
    def done(self) -> bool:
        return self._data.get("status") in FINAL_STATUSES

    @property
    def data(self) -> dict[str, Any]:
        """The job as the endpoint last reported it."""
        return dict(self._data)

    def _url(self) -> str:
        return queue_url(_target(self.endpoint_id), self.endpoint_id)

    async def status(self, hold_ms: int = 0) -> str:
        """The job's status now (``hold_ms``: let the server wait that long for a change)."""
        wait = f"?wait={hold_ms}" if hold_ms else ""
        url = f"{self._url()}/status/{self.id}{wait}"
        self._data = await request(self.endpoint_id, "GET", url, timeout=hold_ms / 1000 + 30)
        return str(self._data.get("status", "UNKNOWN"))

    async def cancel(self) -> EndpointJob:
        self._data.update(
            await request(self.endpoint_id, "POST", f"{self._url()}/cancel/{self.id}")
        )
        return self

    async def wait(self, timeout: float | None = None) -> EndpointJob:
        """Until the job is finished; TimeoutError after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = POLL_PAUSE_S[0]
        while not self.done:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError(
                    f"job {self.id} did not finish within {timeout} s "
                    f"(last status: {self._data.get('status', 'UNKNOWN')})"
                )
            hold = HOLD_MS if left is None else max(1, min(HOLD_MS, int(left * 1000)))
            asked = time.monotonic()
            await self.status(hold)
            if not self.done and time.monotonic() - asked < hold / 2000:
                # Not held until a change (Runpod answers at once): pace the next poll.
                await asyncio.sleep(pause if left is None else min(pause, max(0.0, left)))
                pause = min(pause * 1.5, POLL_PAUSE_S[1])
        return self

    def __repr__(self) -> str:
        return f"EndpointJob(id={self.id!r}, status={self._data.get('status', 'UNKNOWN')!r})"


class ClientCall(Awaitable[Any]):
    """``Endpoint(id=...).post(path, data)``: an awaitable HTTP call. Used as a decorator by
    mistake (``@ep.post("/x")`` on a client), it says so instead of silently doing nothing."""

    def __init__(self, endpoint_id: str, method: str, path: str, body: Any, timeout: float):
        self._args = (endpoint_id, method, path, body, timeout)

    def __await__(self) -> Generator[Any, None, Any]:
        endpoint_id, method, path, body, timeout = self._args
        url = f"{lb_url(_target(endpoint_id), endpoint_id)}{path}"
        return request(endpoint_id, method, url, body, timeout).__await__()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        endpoint_id, method, path, _, _ = self._args
        raise TypeError(
            f"Endpoint(id={endpoint_id!r}) is a client of a deployed endpoint: "
            f"@ep.{method.lower()}({path!r}) cannot add a route to it; use Endpoint(name=...) "
            "for your own code"
        )
