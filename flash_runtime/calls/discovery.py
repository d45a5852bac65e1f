"""Discovery: the URL of a resource of a deployed environment, through the control plane.

The environment's active build holds the answer: its manifest's ``resources_endpoints`` maps
each resource to the URL its endpoint is called at (the deployer and the local control plane
record them there). Finding it takes two GraphQL requests (the environment, for its active build
id; the build, for its manifest), so answers are cached:

* per resource, for ``ttl`` seconds (300: a peer's URL changes only when it is redeployed as a
  new endpoint); the cache is a ``cachetools.TTLCache`` whose ``timer`` tests can replace;
* concurrent first calls for one resource make one lookup: the others wait for its answer
  (in any thread or event loop);
* when the control plane fails, the last URL found keeps being used (a warning is logged) and
  the control plane is asked again only after ``retry_after`` seconds, so an outage neither
  stops calls between endpoints nor slows each one down by a failing request;
* :meth:`Discovery.forget` drops a fresh entry whose URL stopped answering, so the next call
  asks again (an endpoint that was deleted is then reported as not deployed).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable

import aiohttp
from cachetools import TTLCache

from ..errors import RemoteCallError
from ..protocol.controlplane import (
    AuthenticationError,
    ControlPlaneClient,
    ControlPlaneError,
    GraphQLRequestError,
)
from .context import CallContext

log = logging.getLogger("flash_runtime.calls")

TTL_S = 300.0
RETRY_AFTER_S = 30.0
REQUEST_TIMEOUT_S = 15.0
_MAX_ENTRIES = 4096


class _LeaderCancelled(Exception):
    """The lookup another call was waiting on was cancelled; the waiter looks up itself."""


class Discovery:
    """Resource URLs of one environment, as one control plane reports them."""

    def __init__(
        self,
        context: CallContext,
        *,
        ttl: float = TTL_S,
        retry_after: float = RETRY_AFTER_S,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        self.context = context
        self.timer = timer
        self._fresh: TTLCache[str, str] = TTLCache(_MAX_ENTRIES, ttl, timer=timer)
        # Resources whose last lookup failed: their stale URL is used without asking again.
        self._failing: TTLCache[str, bool] = TTLCache(_MAX_ENTRIES, retry_after, timer=timer)
        self._known: dict[str, tuple[str, float]] = {}  # last URL found, and when
        self._pending: dict[str, concurrent.futures.Future[str]] = {}
        self._lock = threading.Lock()

    def forget(self, resource: str) -> None:
        """Ask the control plane again on the next lookup of ``resource``."""
        with self._lock:
            self._fresh.pop(resource, None)
            self._failing.pop(resource, None)

    async def resolve(self, resource: str, session: aiohttp.ClientSession) -> str:
        """The URL of ``resource``; raises RemoteCallError (``not_deployed``, ``unavailable``,
        ``unauthorized``) when there is none to use."""
        while True:
            with self._lock:
                url = self._fresh.get(resource)
                if url is not None:
                    return url
                known = self._known.get(resource)
                if known is not None and resource in self._failing:
                    return known[0]
                pending = self._pending.get(resource)
                if pending is None:
                    pending = self._pending[resource] = concurrent.futures.Future()
                    leading = True
                else:
                    leading = False
            if not leading:
                try:
                    return await asyncio.wrap_future(pending)
                except _LeaderCancelled:
                    continue
            try:
                url = await self._lookup(resource, session)
            except asyncio.CancelledError:
                pending.set_exception(_LeaderCancelled())
                raise
            except BaseException as exc:
                pending.set_exception(exc)
                raise
            else:
                pending.set_result(url)
                return url
            finally:
                with self._lock:
                    del self._pending[resource]

    async def _lookup(self, resource: str, session: aiohttp.ClientSession) -> str:
        try:
            urls = await self._query(resource, session)
        except ControlPlaneError as err:
            with self._lock:
                known = self._known.get(resource)
                if known is not None:
                    self._failing[resource] = True
            if known is None:
                cause = "unauthorized" if isinstance(err, AuthenticationError) else "unavailable"
                raise RemoteCallError(
                    resource, cause, f"cannot look up its URL in {self.context.scope}: {err}"
                ) from None
            url, found_at = known
            log.warning(
                "discovery of %r failed (%s); using the URL found %.0f s ago (%s) and asking "
                "again in %.0f s",
                resource,
                err,
                self.timer() - found_at,
                url,
                self._failing.ttl,
            )
            return url
        found = urls.get(resource)
        with self._lock:
            if found is None:
                self._known.pop(resource, None)
            else:
                self._fresh[resource] = found
                self._known[resource] = (found, self.timer())
                self._failing.pop(resource, None)
        if found is None:
            listed = ", ".join(sorted(urls)) or "none"
            raise RemoteCallError(
                resource,
                "not_deployed",
                f"{self.context.scope} has no endpoint for it (deployed: {listed}); deploy "
                "the app with `flash deploy`",
            )
        return found

    async def _query(self, resource: str, session: aiohttp.ClientSession) -> dict[str, str]:
        """``resources_endpoints`` of the environment's active build."""
        scope = self.context.scope
        client = ControlPlaneClient(self.context.target, timeout=REQUEST_TIMEOUT_S, session=session)
        try:
            if scope.environment_id is not None:
                environment = await client.discover_environment(scope.environment_id)
            else:
                app = await client.discover_app(scope.app or "")
                environment = next(
                    (
                        env
                        for env in (app or {}).get("flashEnvironments") or []
                        if env.get("name") == scope.environment
                    ),
                    None,
                )
            build_id = (environment or {}).get("activeBuildId")
            if not build_id:
                raise RemoteCallError(
                    resource, "not_deployed", f"{scope} does not exist or has no build deployed"
                )
            build = await client.build(build_id)
        except GraphQLRequestError as err:
            if "not found" not in str(err):
                raise
            raise RemoteCallError(resource, "not_deployed", f"{scope}: {err}") from None
        endpoints = (build.get("manifest") or {}).get("resources_endpoints") or {}
        return {str(k): str(v) for k, v in endpoints.items() if v}
