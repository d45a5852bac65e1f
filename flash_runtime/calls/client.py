"""The cross-endpoint client: calls a decorated function that another endpoint serves.

``Endpoint`` calls :func:`call` when a decorated function belongs to another resource than the
one this process serves (see ``Endpoint._runs_here``). The call:

1. finds the function's resource in the manifest's ``function_registry`` (:mod:`.context`);
2. resolves the resource's URL through the control plane (:mod:`.discovery`, cached 300 s);
3. sends it with ``Authorization: Bearer <key>``: a queue-based target gets
   ``POST {url}/runsync {"input": kwargs}`` (positional arguments named from the signature),
   then ``GET {url}/status/{id}`` until the job is finished if ``runsync`` returned first; a
   load-balanced target gets its route (method and path from the manifest; a GET's arguments
   in the query string, the others' as the JSON body, ``{name}`` path parameters filled in);
4. returns the function's result, or raises :class:`~flash_runtime.errors.RemoteCallError`
   naming the target and the cause: ``not_deployed``, ``unauthorized``, ``timeout``,
   ``unavailable``, or ``remote_error`` with the remote exception's type and message.

A request is sent again (with backoff) only when it cannot have run: the connection was refused
or never established, or the target answered 429, 502 or 503 to a job submission (503 or 429
to a route: a load balancer's 502 may come after the worker ran it). A job that was accepted is
never submitted again; its status is polled until it finishes or the call times out, and then it
is cancelled. A URL that answers 404 or refuses connections is looked up again once, so an
endpoint that was deleted is reported as ``not_deployed``.

HTTP goes through one aiohttp session per event loop, which in a worker is one per process.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import re
import threading
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import orjson

from ..errors import RemoteCallError
from ..manifest import FunctionEntry, Resource
from ..protocol.wire import (
    FINAL_STATUSES,
    JobStatus,
    bearer,
    read_job_error,
    read_route_error,
)
from ..worker import request_context
from .context import CallContext, Scope, context_for, find_manifest
from .discovery import RETRY_AFTER_S, TTL_S, Discovery

CALL_TIMEOUT_S = 600.0  # FLASH_CALL_TIMEOUT_S; a longer execution timeout of the target wins
RUNSYNC_WAIT_MS = 90_000  # how long one /runsync or /status request is held at most
CONNECT_TIMEOUT_S = 10.0
BACKOFF_S = (0.1, 0.3, 0.9)  # waits before the 2nd, 3rd and 4th attempt of a refused request
POLL_PAUSE_S = (0.05, 1.0)  # first and longest pause between /status polls that are not held
FINAL = FINAL_STATUSES
_PATH_PARAM = re.compile(r"\{([^}/]+)\}")


class _Refused(Exception):
    """The request did not run: it may be sent again. ``kind``: ``missing`` (404),
    ``unreachable`` (no connection) or ``busy`` (429/502/503)."""

    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


async def _close_with_loop(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    """Keeps ``session`` open while its event loop runs. A loop finalises its async generators
    when it shuts down (``asyncio.run`` does), which closes the session cleanly instead of
    leaving it to a garbage-collection warning."""
    try:
        yield
    finally:
        await session.close()


class RemoteClient:
    """Calls other endpoints' functions; one per process (:func:`default_client`).

    ``timer`` is the clock of the discovery cache (tests advance it instead of sleeping).
    """

    def __init__(
        self,
        *,
        timer: Callable[[], float] = time.monotonic,
        ttl: float = TTL_S,
        retry_after: float = RETRY_AFTER_S,
        call_timeout: float | None = None,
    ) -> None:
        self.timer = timer
        self.ttl = ttl
        self.retry_after = retry_after
        self.call_timeout = call_timeout or float(
            os.environ.get("FLASH_CALL_TIMEOUT_S") or CALL_TIMEOUT_S
        )
        self._discoveries: dict[tuple[Any, ...], Discovery] = {}
        self._sessions: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop,
            tuple[aiohttp.ClientSession, AsyncGenerator[None, None]],
        ] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        # Scripts: the live environment each function's calls go to once provisioned there,
        # and the deployments under way (per event loop, by project).
        self._live: dict[Callable[..., Any], CallContext] = {}
        self._live_projects: dict[str, CallContext] = {}  # by the deployed build's manifest
        self._provisioning: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[Any, asyncio.Task[Any]]
        ] = weakref.WeakKeyDictionary()

    def discovery(self, context: CallContext) -> Discovery:
        """The discovery (and its cache) of ``context``'s control plane and environment."""
        key = (context.target.api_url, context.target.api_key, context.scope)
        with self._lock:
            found = self._discoveries.get(key)
            if found is None:
                found = self._discoveries[key] = Discovery(
                    context, ttl=self.ttl, retry_after=self.retry_after, timer=self.timer
                )
            return found

    async def session(self) -> aiohttp.ClientSession:
        """This event loop's session (created on first use, closed when the loop ends)."""
        loop = asyncio.get_running_loop()
        held = self._sessions.get(loop)
        if held is not None and not held[0].closed:
            return held[0]
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
        )
        closer = _close_with_loop(session)
        self._sessions[loop] = (session, closer)
        await anext(closer)
        return session

    async def close(self) -> None:
        """Close this event loop's session (others close with their loops)."""
        held = self._sessions.pop(asyncio.get_running_loop(), None)
        if held is not None:
            await held[0].close()

    async def call(
        self,
        callee: str,
        name: str,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        *,
        method: str | None = None,
    ) -> Any:
        """Call ``name`` (a function, or with ``method`` a class endpoint) of the endpoint
        ``callee``; ``func`` is the user's function (its signature names positional
        arguments; for a method, its first parameter is ``self``).

        In a script, a call that finds nothing deployed provisions the project in its app's
        ``live`` environment (:mod:`flash_runtime.deploy.live`) and goes there."""
        live = self._live_for(func)
        if live is None:
            try:
                context = context_for(func, callee)
                return await self._call(context, callee, name, func, args, kwargs, method)
            except RemoteCallError as err:
                if err.cause != "not_deployed" or not _may_provision():
                    raise
                live = await self._provision(func, callee, err)
        return await self._call(live, callee, name, func, args, kwargs, method)

    async def _provision(
        self, func: Callable[..., Any], callee: str, missing: RemoteCallError
    ) -> CallContext:
        """The live environment's context for ``func``'s project, deployed once per process
        (concurrent first calls share one deployment)."""
        import importlib
        from pathlib import Path

        try:  # the CLI's side of the house: installed with flash-runtime[cli], not in workers
            live = importlib.import_module("flash_runtime.deploy.live")
        except ImportError:
            raise missing from None
        source = inspect.getsourcefile(inspect.unwrap(func))
        if source is None:
            raise missing
        project = live.project_of(Path(source))
        loop = asyncio.get_running_loop()
        pending = self._provisioning.setdefault(loop, {})
        task = pending.get(project)
        if task is None:
            task = pending[project] = loop.create_task(live.provision(project, callee))
            task.add_done_callback(lambda _: pending.pop(project, None))
        done = await asyncio.shield(task)
        context = CallContext(
            done.manifest,
            str(done.manifest_path),
            done.target,
            Scope(app=done.app, environment=done.environment),
        )
        with self._lock:
            self._live_projects[str(Path(done.manifest_path).resolve())] = context
            self._live[func] = context
        return context

    def _live_for(self, func: Callable[..., Any]) -> CallContext | None:
        """The live environment this process deployed ``func``'s project to, if it did (so
        the project's other functions go there too, without deploying again)."""
        live = self._live.get(func)
        if live is None and self._live_projects:
            manifest = find_manifest(func, os.environ)  # the deployed build's, above func
            live = self._live_projects.get(str(manifest.resolve()))
            if live is not None:
                with self._lock:
                    self._live[func] = live
        return live

    async def _call(
        self,
        context: CallContext,
        callee: str,
        name: str,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        method: str | None,
    ) -> Any:
        resource_name = context.manifest.function_registry.get(name)
        if resource_name is None:
            raise RemoteCallError(
                callee,
                "not_deployed",
                f"{name} is not in the manifest {context.manifest_source}; rebuild the project "
                "with `flash build` (or `flash deploy`)",
            )
        resource = context.manifest.resources[resource_name]
        payload = arguments(func, args, kwargs, method=method is not None)
        if method is not None:
            payload["method"] = method
        timeout = self.call_timeout
        if resource.executionTimeoutMs:  # a job may run this long, plus time in the queue
            timeout = max(timeout, resource.executionTimeoutMs / 1000 + 60)
        deadline = time.monotonic() + timeout
        headers = {
            **bearer(context.target.api_key),
            "Content-Type": "application/json",
        }
        request_id = (
            request_context.outgoing()
        )  # the request (or job) this call is made for, followed on
        if request_id:
            headers["X-Request-ID"] = request_id
        discovery = self.discovery(context)
        session = await self.session()
        looked_again = False
        attempt = 0  # sends refused so far, not counting one followed by a fresh lookup
        while True:
            url = await discovery.resolve(resource_name, session)
            try:
                if resource.is_load_balanced:
                    entry = _function(resource, name)
                    return await self._route(
                        session, resource_name, url, entry, payload, headers, deadline
                    )
                return await self._job(session, resource_name, url, payload, headers, deadline)
            except _Refused as refused:
                if refused.kind != "busy" and not looked_again:
                    looked_again = True
                    discovery.forget(resource_name)
                    continue
                if refused.kind == "missing":
                    raise RemoteCallError(resource_name, "not_deployed", refused.reason) from None
                if attempt == len(BACKOFF_S) or time.monotonic() + BACKOFF_S[attempt] > deadline:
                    tries = attempt + 1 + looked_again
                    raise RemoteCallError(
                        resource_name, "unavailable", f"{refused.reason} ({tries} attempts)"
                    ) from None
                await asyncio.sleep(BACKOFF_S[attempt])
                attempt += 1

    # queue-based targets

    async def _job(
        self,
        session: aiohttp.ClientSession,
        resource: str,
        url: str,
        payload: dict[str, Any],
        headers: Mapping[str, str],
        deadline: float,
    ) -> Any:
        body = encode({"input": payload}, resource)
        wait_ms = _wait_ms(deadline)
        status, _, raw = await _send(
            session, resource, "POST", f"{url}/runsync?wait={wait_ms}", body, headers, wait_ms
        )
        if status in (429, 502, 503):
            raise _Refused("busy", f"{url}/runsync answered HTTP {status}: {_excerpt(raw)}")
        job = _job_body(resource, url, status, raw)
        pause = POLL_PAUSE_S[0]
        while job.get("status") not in FINAL:
            job_id = str(job.get("id"))
            if time.monotonic() >= deadline:
                await _cancel(session, url, job_id, headers)
                raise RemoteCallError(
                    resource,
                    "timeout",
                    f"job {job_id} did not finish in time (FLASH_CALL_TIMEOUT_S); it was cancelled",
                )
            wait_ms = _wait_ms(deadline)
            asked = time.monotonic()
            try:
                status, _, raw = await _send(
                    session,
                    resource,
                    "GET",
                    f"{url}/status/{job_id}?wait={wait_ms}",
                    None,
                    headers,
                    wait_ms,
                )
            except _Refused:
                status = 0
            held = False
            if status not in (0, 429, 502, 503):  # else: asking again is harmless
                job = _job_body(resource, url, status, raw, job_id=job_id)
                held = time.monotonic() - asked >= wait_ms / 2000
            if job.get("status") not in FINAL and not held:
                # The server did not hold the poll until the job changed: pace the next one.
                await asyncio.sleep(pause)
                pause = min(pause * 2, POLL_PAUSE_S[1])
        return _outcome(resource, job)

    # load-balanced targets

    async def _route(
        self,
        session: aiohttp.ClientSession,
        resource: str,
        url: str,
        entry: FunctionEntry,
        payload: dict[str, Any],
        headers: Mapping[str, str],
        deadline: float,
    ) -> Any:
        method = entry.http_method or "POST"
        fields = dict(payload)
        try:
            path = _PATH_PARAM.sub(
                lambda m: quote(str(fields.pop(m.group(1))), safe=""), entry.http_path or "/"
            )
        except KeyError as err:
            raise TypeError(f"{entry.name}() missing the path parameter {err}") from None
        target = f"{url.rstrip('/')}{path}"
        body = None
        if method == "GET":
            query = _query(fields)
            target = f"{target}?{query}" if query else target
        else:
            body = encode(fields, resource)
        wait_ms = max(1, round((deadline - time.monotonic()) * 1000))
        status, content_type, raw = await _send(
            session, resource, method, target, body, headers, wait_ms
        )
        if status in (429, 503):
            raise _Refused("busy", f"{method} {target} answered HTTP {status}: {_excerpt(raw)}")
        if status == 404:
            raise _Refused("missing", f"{method} {target} answered 404: {_excerpt(raw)}")
        if status in (401, 403):
            raise _unauthorized(resource, target, status)
        if status >= 400:
            raise _route_error(resource, method, target, status, raw)
        if not raw:
            return None
        if content_type.endswith("json"):
            return orjson.loads(raw)
        return raw.decode(errors="replace")


def _may_provision() -> bool:
    """Whether a call that finds nothing deployed may deploy the project: in a script (not a
    worker) unless ``FLASH_LIVE_PROVISIONING=0``."""
    if os.environ.get("FLASH_RESOURCE_NAME"):
        return False
    return (os.environ.get("FLASH_LIVE_PROVISIONING") or "1").strip().lower() not in (
        "0",
        "false",
        "no",
    )


def _function(resource: Resource, name: str) -> FunctionEntry:
    return next(fn for fn in resource.functions if fn.name == name)


_signatures: dict[Callable[..., Any], inspect.Signature] = {}


def arguments(
    func: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], *, method: bool
) -> dict[str, Any]:
    """The call's arguments by name, as the target receives them (``method``: ``func`` is a
    method, whose ``self`` is not sent). Raises TypeError as the local call would."""
    signature = _signatures.get(func)
    if signature is None:
        signature = _signatures[func] = inspect.signature(func)
    try:
        bound = signature.bind(*((None,) if method else ()), *args, **kwargs)
    except TypeError as err:
        raise TypeError(f"{func.__name__}(): {err}") from None
    named: dict[str, Any] = {}
    for i, (param_name, value) in enumerate(bound.arguments.items()):
        kind = signature.parameters[param_name].kind
        if method and i == 0:
            continue
        if kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                raise TypeError(
                    f"{func.__name__}(): *{param_name} cannot be sent to another endpoint, "
                    "which takes arguments by name; pass them as a list argument"
                )
        else:
            named[param_name] = value
    return named


def _jsonable(value: Any) -> Any:
    dump = getattr(value, "model_dump", None)  # pydantic models
    if callable(dump):
        return dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def encode(value: Any, resource: str) -> bytes:
    try:
        return orjson.dumps(value, default=_jsonable, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError as err:
        raise TypeError(
            f"the arguments of a call to endpoint {resource!r} travel as JSON: {err}"
        ) from None


def _query(fields: Mapping[str, Any]) -> str:
    items: list[tuple[str, str]] = []
    for key, value in fields.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None:
                items.append(
                    (
                        key,
                        ("true" if item else "false")
                        if item is True or item is False
                        else str(item),
                    )
                )
    return urlencode(items)


def _wait_ms(deadline: float) -> int:
    return max(1, min(RUNSYNC_WAIT_MS, round((deadline - time.monotonic()) * 1000)))


async def _send(
    session: aiohttp.ClientSession,
    resource: str,
    method: str,
    url: str,
    body: bytes | None,
    headers: Mapping[str, str],
    wait_ms: int,
) -> tuple[int, str, bytes]:
    """One request: (status, content type, body). Raises _Refused when it was never sent."""
    timeout = aiohttp.ClientTimeout(total=wait_ms / 1000 + 30, sock_connect=CONNECT_TIMEOUT_S)
    try:
        async with session.request(
            method, url, data=body, headers=headers, timeout=timeout
        ) as response:
            return response.status, response.content_type, await response.read()
    except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as err:
        raise _Refused("unreachable", f"cannot connect to {url}: {err}") from None
    except TimeoutError:
        raise RemoteCallError(
            resource, "timeout", f"{method} {url} got no answer in time (not sent again)"
        ) from None
    except aiohttp.ClientError as err:
        raise RemoteCallError(
            resource,
            "unavailable",
            f"{method} {url} failed: {err or type(err).__name__} (not sent again: it may have run)",
        ) from None


def _job_body(
    resource: str, url: str, status: int, raw: bytes, *, job_id: str | None = None
) -> dict[str, Any]:
    """A /runsync or /status answer, or the error it stands for."""
    if status in (401, 403):
        raise _unauthorized(resource, url, status)
    if status == 404 and job_id is None:
        raise _Refused("missing", f"{url}/runsync answered 404: {_excerpt(raw)}")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    if status >= 400 or not isinstance(body, dict) or "status" not in body:
        what = f"job {job_id}" if job_id else "the job submission"
        raise RemoteCallError(
            resource, "unavailable", f"{what} at {url} answered HTTP {status}: {_excerpt(raw)}"
        )
    return body


def _outcome(resource: str, job: Mapping[str, Any]) -> Any:
    status = job.get("status")
    if status == JobStatus.COMPLETED:
        return job.get("output")
    if status == JobStatus.FAILED:
        raise _job_error(resource, job.get("error"))
    if status == JobStatus.TIMED_OUT:
        raise RemoteCallError(
            resource, "timeout", f"job {job.get('id')} exceeded the endpoint's execution timeout"
        )
    raise RemoteCallError(resource, "remote_error", f"job {job.get('id')} was {status}")


def _job_error(resource: str, error: Any) -> RemoteCallError:
    """The exception of a failed job: the runpod SDK sends it as JSON text with
    ``error_type`` (``"<class 'ValueError'>"``) and ``error_message``."""
    remote_type, message = read_job_error(error)
    return RemoteCallError(
        resource,
        "remote_error",
        f"{remote_type}: {message}",
        remote_type=remote_type,
        remote_message=message,
    )


def _route_error(resource: str, method: str, url: str, status: int, raw: bytes) -> RemoteCallError:
    """A route's error answer: the worker's ``{"error": type, "message": ...}`` when it has
    one."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        body = None
    found = read_route_error(body)
    if found is not None:
        remote_type, message = found
        return RemoteCallError(
            resource,
            "remote_error",
            f"{remote_type}: {message} ({method} {url}: HTTP {status})",
            remote_type=remote_type,
            remote_message=message,
        )
    return RemoteCallError(
        resource, "remote_error", f"{method} {url} answered HTTP {status}: {_excerpt(raw)}"
    )


def _unauthorized(resource: str, url: str, status: int) -> RemoteCallError:
    return RemoteCallError(
        resource,
        "unauthorized",
        f"{url} refused the API key (HTTP {status}); the caller's RUNPOD_API_KEY must be a key "
        "of the account that deployed the app",
    )


def _excerpt(raw: bytes) -> str:
    return raw[:300].decode(errors="replace").strip() or "(empty)"


async def _cancel(
    session: aiohttp.ClientSession, url: str, job_id: str, headers: Mapping[str, str]
) -> None:
    """Best effort: a job nobody waits for should not keep a worker busy."""
    try:
        async with session.post(
            f"{url}/cancel/{job_id}", headers=headers, timeout=aiohttp.ClientTimeout(total=10)
        ):
            pass
    except (aiohttp.ClientError, TimeoutError):
        pass


_default: RemoteClient | None = None
_default_lock = threading.Lock()


def default_client() -> RemoteClient:
    """The process's client (its sessions and discovery caches are shared by every call)."""
    global _default
    if _default is None:
        with _default_lock:
            if _default is None:
                _default = RemoteClient()
    return _default


async def call(
    callee: str,
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """``func(*args, **kwargs)`` on the endpoint ``callee`` (what ``Endpoint`` calls)."""
    return await default_client().call(callee, func.__name__, func, args, kwargs)
