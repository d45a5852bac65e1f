"""One ``flash run``: build, deploy to the ``live`` environment, serve, reload, clean up.

The development server is a client of the same pieces ``flash deploy`` uses: the packer builds
(dependencies from its cache, so a code change packages in a fraction of a second), the
deployer releases the build to the app's ``live`` environment with ``live-`` endpoint names
(unchanged endpoints stay, changed ones are updated, and the platform rolls every endpoint's
workers onto the new build: requests in flight finish on the old workers), and the proxy
(:mod:`.app`) forwards to the endpoints' URLs with the platform's key. With ``--platform
runpod`` the same code deploys to Runpod.

Life of a session:

1. resolve the platform (the local one is started if needed), bind the port, lock the project
   (one ``flash run`` per project directory);
2. build and release; start serving; compute the API schemas (:mod:`.openapi`) in a child;
3. on a change (:mod:`.watch`): rebuild and release. A build that fails (a syntax error,
   duplicate names, ...) is reported and the last good build keeps serving. On the local
   platform the terminal then says when every live endpoint serves the new code (its old
   workers are gone, a new one is ready, or none runs and the next request starts one);
4. meanwhile worker output streams to the terminal (:mod:`.logs`, local platform);
5. Ctrl-C (or SIGTERM): stop serving, delete the ``live`` environment's endpoints (other
   environments are not touched). A second Ctrl-C skips the clean-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from ..deploy.deployer import LIVE_ENVIRONMENT, LIVE_PREFIX, DeployResult, release
from ..errors import FlashError
from ..protocol.local import is_loopback
from ..protocol.wire import bearer
from .state import LiveEndpoint, Snapshot
from .terminal import Terminal

if TYPE_CHECKING:
    import uvicorn
    from rich.console import Console

    from ..pack.builder import BuildResult
    from ..protocol.controlplane import ControlPlaneClient
    from ..protocol.target import Target
    from .logs import LogTailer
    from .openapi import Report

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8888
PORT_ATTEMPTS = 20
SERVING_WAIT_S = 120.0
SERVING_POLL_S = 0.05
CLEANUP_TIMEOUT_S = 60.0


class DevServerError(FlashError):
    """``flash run`` cannot start; the message says why and what to do."""


@dataclass
class DevOptions:
    """What ``flash run`` was asked to do."""

    project: Path
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    port_explicit: bool = False  # a busy explicit port is an error; the default moves on
    platform: str = "local"
    app_name: str | None = None
    exclude: tuple[str, ...] = ()
    reload: bool = True


def bind(host: str, port: int, explicit: bool) -> socket.socket:
    """A listening socket on ``host:port``; the default port moves up to the next free one."""
    attempts = 1 if explicit or port == 0 else PORT_ATTEMPTS
    last: OSError | None = None
    for candidate in range(port, port + attempts):
        try:
            infos = socket.getaddrinfo(host, candidate, type=socket.SOCK_STREAM)
        except socket.gaierror as err:
            raise DevServerError(f"cannot resolve --host {host!r}: {err}") from None
        family, _, _, _, address = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
            sock.listen(2048)
        except OSError as err:
            sock.close()
            last = err
            continue
        sock.setblocking(False)
        return sock
    if explicit:
        raise DevServerError(
            f"cannot listen on {host}:{port} ({last.strerror if last else 'busy'}); "
            "choose another port with --port"
        )
    raise DevServerError(
        f"ports {port} to {port + attempts - 1} on {host} are all in use; choose one with --port"
    )


@contextlib.contextmanager
def project_lock(project: Path) -> Iterator[None]:
    """One ``flash run`` per project: two would fight over the same live endpoints."""
    flash_dir = project / ".flash"
    flash_dir.mkdir(exist_ok=True)
    path = flash_dir / "run.lock"
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise DevServerError(
                f"another `flash run` (pid {holder}) is serving this project; stop it first"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            f.seek(0)
            f.truncate()


class DevServer:
    """A ``flash run`` session; :meth:`run` is all of it."""

    def __init__(self, options: DevOptions, console: Console) -> None:
        self.options = options
        self.project = options.project.resolve()
        self.console = console
        self.terminal = Terminal(console)
        self.app_name = options.app_name or self.project.name
        self.snapshot: Snapshot | None = None
        self.target: Target | None = None
        self.client: ControlPlaneClient | None = None
        self._http: aiohttp.ClientSession | None = None
        self._server: uvicorn.Server | None = None
        self._stop = asyncio.Event()
        self._signals = 0
        self._main: asyncio.Task[Any] | None = None
        self._schemas: dict[str, asyncio.Task[Report]] = {}
        self._openapi: tuple[str, dict[str, Any]] | None = None
        self._attempted: str | None = None  # fingerprint of the last build attempted
        self._shipped: frozenset[str] = frozenset()  # the files it shipped
        self._announce: asyncio.Task[None] | None = None
        self._tailer: LogTailer | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.url = ""

    # -- what the HTTP side uses ------------------------------------------------------------

    @property
    def http(self) -> aiohttp.ClientSession:
        """The one session every forwarded request goes through."""
        if self._http is None:
            self._http = aiohttp.ClientSession(
                auto_decompress=False,  # bodies pass through as the worker encoded them
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
                connector=aiohttp.TCPConnector(limit=0),
            )
        return self._http

    @property
    def api_key(self) -> str:
        """The platform's key, which the server adds to every forwarded request."""
        assert self.target is not None
        return self.target.api_key

    def describe(self) -> dict[str, Any]:
        """``GET /``: the app's endpoints and their paths here."""
        snapshot = self.snapshot
        endpoints = []
        for ep in sorted(snapshot.endpoints.values(), key=lambda e: e.resource) if snapshot else []:
            item: dict[str, Any] = {
                "name": ep.resource,
                "type": ep.type,
                "endpoint": ep.name,
                "id": ep.id,
                "paths": ep.paths(),
            }
            if ep.type == "qb":
                item["function"] = ep.function
            endpoints.append(item)
        return {
            "app": self.app_name,
            "environment": LIVE_ENVIRONMENT,
            "platform": self.target.platform if self.target else None,
            "build": snapshot.build_id if snapshot else None,
            "paths": (
                "{endpoint} is the endpoint's name as written in Endpoint(name=...). Queue-based "
                'endpoints: POST /{endpoint}/run and POST /{endpoint}/runsync with {"input": '
                "{...arguments}}, GET /{endpoint}/status/{job_id}. Load-balanced endpoints: "
                "their routes under /{endpoint}, e.g. POST /{endpoint}/process. No key needed."
            ),
            "docs": f"{self.url}/docs",
            "openapi": f"{self.url}/openapi.json",
            "endpoints": endpoints,
            # runpod-flash's `flash dev` paths, served too (its examples' READMEs use them)
            "referencePaths": snapshot.aliases.listing() if snapshot else [],
        }

    async def openapi(self) -> dict[str, Any]:
        """The OpenAPI document of the build being served."""
        from .openapi import build_document

        snapshot = self.snapshot
        assert snapshot is not None
        if self._openapi is not None and self._openapi[0] == snapshot.build_id:
            return self._openapi[1]
        task = self._schema_report(snapshot)
        try:
            report = await asyncio.shield(task)
        except asyncio.CancelledError:
            if not task.cancelled():
                raise  # this request was cancelled
            return await self.openapi()  # a newer build replaced this one meanwhile
        notes = {
            name: f"Deployed as `{ep.name}` ({ep.id})." for name, ep in snapshot.endpoints.items()
        }
        document = build_document(
            snapshot.manifest,
            report,
            title=f"{self.app_name} (flash run)",
            version=snapshot.build_id[:8],
            endpoint_notes=notes,
        )
        if self.snapshot is snapshot:
            self._openapi = (snapshot.build_id, document)
        return document

    def _schema_report(self, snapshot: Snapshot) -> asyncio.Task[Report]:
        from .openapi import compute_schemas

        task = self._schemas.get(snapshot.build_id)
        if task is None:
            for build_id, old in list(self._schemas.items()):
                old.cancel()
                del self._schemas[build_id]
            task = asyncio.create_task(compute_schemas(self.project, snapshot.manifest))
            self._schemas[snapshot.build_id] = task
        return task

    # -- the session ------------------------------------------------------------------------

    async def run(self) -> int:
        """Serve until Ctrl-C or SIGTERM; returns the exit code."""
        self._main = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal)
        try:
            with project_lock(self.project):
                return await self._session()
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)

    def _on_signal(self) -> None:
        self._signals += 1
        if self._signals == 1:
            self._stop.set()
            if self._server is not None:
                self._server.should_exit = True
            elif self._main is not None:
                self._main.cancel()  # still starting: stop right there, then clean up
        elif self._main is not None:
            self._main.cancel()  # a second Ctrl-C: skip the clean-up

    async def _session(self) -> int:
        options = self.options
        sock = bind(options.host, options.port, options.port_explicit)
        host, port = sock.getsockname()[:2]
        shown_host = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown_host}:{port}"
        if port != options.port and options.port:
            self.terminal.note(f"port {options.port} is in use: serving on {port}")
        deployed = False
        try:
            from ..deploy.target import resolve
            from ..protocol.controlplane import ControlPlaneClient

            self.target = await asyncio.to_thread(resolve, options.platform, start=True)
            self.terminal.note(
                f"flash run: app {self.app_name!r}, environment {LIVE_ENVIRONMENT!r} on the "
                f"{self.target.platform} platform ({self.target.api_url})"
            )
            self.client = ControlPlaneClient(self.target)
            built = await asyncio.to_thread(self._build, self.console)
            deployed = True
            result = await self._release(built, console=self.console)
            self._adopt(built, result)
            self._schema_report(self._current())
            if options.reload:
                from .watch import shipped_files

                _, self._shipped = await asyncio.to_thread(shipped_files, self.project)
            self._banner()
            await self._serve(sock)
            return 0
        except asyncio.CancelledError:
            if self._signals >= 2:
                raise
            return 130
        finally:
            sock.close()
            await self._shutdown(remove=deployed)

    def _current(self) -> Snapshot:
        assert self.snapshot is not None
        return self.snapshot

    def _build(self, console: Console | None) -> BuildResult:
        from ..pack import build

        return build(self.project, exclude=self.options.exclude, console=console)

    async def _release(self, built: BuildResult, console: Console | None) -> DeployResult:
        assert self.client is not None
        return await release(
            self.client,
            artifact=built.artifact,
            manifest=built.manifest,
            manifest_path=built.manifest_path,
            app_name=self.app_name,
            environment_name=LIVE_ENVIRONMENT,
            console=console,
            name_prefix=LIVE_PREFIX,
        )

    def _adopt(self, built: BuildResult, result: DeployResult) -> None:
        """Serve ``result`` from now on."""
        manifest = built.manifest
        endpoints = {}
        for ep in result.endpoints:
            resource = manifest.resources[ep.resource]
            endpoints[ep.resource] = LiveEndpoint(
                resource=ep.resource,
                name=LIVE_PREFIX + ep.resource,
                id=ep.id,
                type=ep.type,
                url=ep.url.rstrip("/"),
                routes=tuple(ep.routes),
                function=resource.functions[0].name if resource.functions else "",
            )
        fingerprint = manifest.source_fingerprint
        self.snapshot = Snapshot(result.build_id, manifest, endpoints, fingerprint)
        self._attempted = fingerprint
        if self._tailer is not None:
            self._tailer.track({ep.id: ep.resource for ep in endpoints.values()})

    def _banner(self) -> None:
        snapshot = self._current()
        t = self.terminal
        t.markup("")
        t.markup(
            f"[green]✓[/green] [bold]flash run[/bold]  {self.url}  [dim]build "
            f"{snapshot.build_id[:8]} · {len(snapshot.endpoints)} endpoint(s) · no key "
            "needed here[/dim]"
        )
        rows = []
        for ep in sorted(snapshot.endpoints.values(), key=lambda e: e.resource):
            kind = "queue-based" if ep.type == "qb" else "load-balanced"
            for path in ep.paths():
                method, _, where = path.partition(" ")
                rows.append((method, where, kind, ep.name))
        if rows:
            wm = max(len(r[0]) for r in rows)
            wp = max(len(r[1]) for r in rows)
            for method, where, kind, name in rows:
                t.markup(f"  {method:<{wm}}  {where:<{wp}}  [dim]{kind} · {name}[/dim]")
        t.markup(f"  [dim]docs[/dim]  {self.url}/docs")
        t.markup(f"  [dim]list[/dim]  {self.url}/")
        t.markup("  [dim]stop[/dim]  Ctrl-C (deletes the live- endpoints)")
        if not is_loopback(self.options.host):
            t.warn(
                f"listening on {self.options.host}, not on loopback: the development server "
                "asks for no key and calls your endpoints with the platform's, so anyone who "
                "can reach this port can call them"
            )
        t.note("watching for changes" if self.options.reload else "not watching (--no-reload)")
        t.markup("")

    async def _serve(self, sock: socket.socket) -> None:
        import uvicorn

        from .app import build_app

        config = uvicorn.Config(
            build_app(self, self.options.host),
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=2,
            server_header=False,
        )
        server = _quiet_server_class()(config)
        self._server = server
        if self.target is not None and self.target.platform == "local":
            from .logs import LogTailer

            self._tailer = LogTailer(self.target.api_url, self.target.api_key, self.terminal)
            snapshot = self._current()
            self._tailer.track({ep.id: ep.resource for ep in snapshot.endpoints.values()})
            self._tasks.append(asyncio.create_task(self._tailer.run(), name="worker-logs"))
        else:
            self.terminal.note("worker output is in the Runpod console (this platform's logs)")
        if self.options.reload:
            self._tasks.append(asyncio.create_task(self._watch(), name="watch"))
        if self._stop.is_set():
            return
        await server.serve(sockets=[sock])

    # -- reloading --------------------------------------------------------------------------

    async def _watch(self) -> None:
        from .watch import changes

        try:
            async for paths in changes(self.project, self._stop):
                try:
                    await self._reload(paths)
                except asyncio.CancelledError:
                    raise
                except Exception as err:  # never lose the watcher to one bad reload
                    self.terminal.error(f"reload failed: {type(err).__name__}: {err}")
        except asyncio.CancelledError:
            raise
        except Exception as err:
            self.terminal.error(f"the file watcher stopped: {err}; restart `flash run`")

    async def _reload(self, paths: list[Path]) -> None:
        from .watch import shipped_files

        saved_at = _saved_at(paths)
        fingerprint, shipped = await asyncio.to_thread(shipped_files, self.project)
        if fingerprint == self._attempted:
            return  # nothing that ships changed (an ignored file, or the same content again)
        # Name the shipped files that changed (not an editor's temporary files).
        relevant = [
            r for r in (_rel(self.project, p) for p in paths) if r in shipped | self._shipped
        ]
        self._shipped = shipped
        names = ", ".join(relevant[:5]) or "the project"
        if len(relevant) > 5:
            names += f" and {len(relevant) - 5} more"
        serving = self._current()
        if fingerprint == serving.fingerprint:
            self._attempted = fingerprint
            self.terminal.ok(f"{names} changed back: the serving build has this code")
            return
        self._attempted = fingerprint
        self.terminal.step(f"{names} changed: rebuilding")
        started = time.perf_counter()
        try:
            built = await asyncio.to_thread(self._build, None)
        except FlashError as err:
            self.terminal.error(
                f"build failed; still serving build {serving.build_id[:8]}", str(err)
            )
            return
        build_s = time.perf_counter() - started
        before = await self._serving_workers()
        started, released_from = time.perf_counter(), time.time()
        try:
            result = await self._release(built, console=None)
        except FlashError as err:
            self.terminal.error(
                f"deploying the new build failed; still serving build {serving.build_id[:8]}",
                str(err),
            )
            return
        release_s = time.perf_counter() - started
        previous = serving
        self._adopt(built, result)
        changes = _describe_changes(previous, self._current(), result)
        self.terminal.ok(
            f"built in {build_s:.2f}s, released build {result.build_id[:8]} in "
            f"{release_s:.2f}s{changes}"
        )
        if self._announce is not None:
            self._announce.cancel()
        if before is not None:
            self._announce = asyncio.create_task(
                self._announce_serving(before, saved_at, released_from)
            )
        else:
            self.terminal.ok(
                f"released: the platform rolls the workers onto it "
                f"({time.time() - saved_at:.2f}s after the save)"
            )
            self._schema_report(self._current())

    async def _platform_status(self) -> dict[str, Any] | None:
        """The local platform's endpoints and workers (``/platform/status``)."""
        target = self.target
        if target is None or target.platform != "local":
            return None
        try:
            async with self.http.get(
                f"{target.api_url}/platform/status",
                headers=bearer(target.api_key),
                timeout=aiohttp.ClientTimeout(total=5),
            ) as response:
                if response.status != 200:
                    return None
                body: dict[str, Any] = await response.json()
                return body
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def _serving_workers(self) -> dict[str, set[str]] | None:
        """Per live endpoint, its workers that serve now (None: the platform cannot say)."""
        status = await self._platform_status()
        if status is None:
            return None
        ids = {ep.id for ep in self._current().endpoints.values()}
        return {
            ep["id"]: {w["id"] for w in ep.get("workers", []) if w["state"] in _SERVING}
            for ep in status.get("endpoints", [])
            if ep["id"] in ids
        }

    async def _announce_serving(
        self, before: dict[str, set[str]], saved_at: float, released_from: float
    ) -> None:
        """Say when every live endpoint answers with the new build (or that its workers fail
        to start: then the previous build's workers keep serving)."""
        deadline = time.monotonic() + SERVING_WAIT_S
        snapshot = self._current()
        reported: set[str] = set()
        while time.monotonic() < deadline:
            status = await self._platform_status()
            if status is not None:
                by_id = {ep["id"]: ep for ep in status.get("endpoints", [])}
                pending, cold = [], []
                for ep in snapshot.endpoints.values():
                    workers = (by_id.get(ep.id) or {}).get("workers", [])
                    old = before.get(ep.id, set())
                    error = ((by_id.get(ep.id) or {}).get("health") or {}).get("lastError")
                    if (
                        error
                        and error.get("beforeReady")
                        and error.get("at", 0) >= released_from
                        and ep.resource not in reported
                    ):
                        reported.add(ep.resource)
                        self.terminal.error(
                            f"{ep.resource}: the new build's workers fail to start (exit code "
                            f"{error.get('exitCode')}); workers of the previous build keep "
                            "serving it. The worker's last lines:",
                            "\n".join(error.get("lastLines", [])[-10:]),
                        )
                    serving = [w for w in workers if w["state"] in _SERVING]
                    if any(w["id"] in old for w in serving):
                        pending.append(ep.resource)
                    elif not any(w["state"] == "ready" for w in serving):
                        if serving:
                            pending.append(ep.resource)  # its first new worker is booting
                        else:
                            cold.append(ep.resource)
                if not pending:
                    took = time.time() - saved_at
                    note = (
                        f" ({', '.join(sorted(cold))}: no worker running; the next request "
                        "starts one)"
                        if cold
                        else ""
                    )
                    self.terminal.ok(f"new code serving, {took:.2f}s after the save{note}")
                    # The documentation's schemas come after, not to slow the new workers.
                    if self.snapshot is snapshot:
                        self._schema_report(snapshot)
                    return
            await asyncio.sleep(SERVING_POLL_S)
        self.terminal.warn(
            f"the new build is released but workers still run the old one after "
            f"{SERVING_WAIT_S:.0f}s; `flash platform status` shows them"
        )

    # -- stopping ---------------------------------------------------------------------------

    async def _shutdown(self, *, remove: bool) -> None:
        self._stop.set()
        tasks = [*self._tasks, *self._schemas.values()]
        if self._announce is not None:
            tasks.append(self._announce)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._tailer is not None:
            with contextlib.suppress(Exception):
                await self._tailer.poll()  # the workers' last words
            await self._tailer.close()
        try:
            if remove and self.client is not None:
                self.terminal.note("stopping: deleting the live endpoints")
                async with asyncio.timeout(CLEANUP_TIMEOUT_S):
                    await self._remove_live()
        except asyncio.CancelledError:
            self._left_behind("cleanup interrupted")
            raise
        except (FlashError, TimeoutError) as err:
            self._left_behind(str(err) or "timed out")
        finally:
            if self.client is not None:
                await self.client.close()
            if self._http is not None:
                await self._http.close()

    async def _remove_live(self) -> None:
        from ..deploy.manage import remove_endpoints

        client = self.client
        assert client is not None
        app = next((a for a in await client.list_apps() if a["name"] == self.app_name), None)
        env_ref = next(
            (
                e
                for e in (app or {}).get("flashEnvironments") or []
                if e["name"] == LIVE_ENVIRONMENT
            ),
            None,
        )
        if env_ref is None:
            return
        environment = await client.environment(env_ref["id"])
        removed = await remove_endpoints(client, self.app_name, environment)
        if removed:
            names = ", ".join(ep["name"] for ep in removed)
            self.terminal.ok(
                f"deleted {names} (environment {LIVE_ENVIRONMENT} of app {self.app_name}; "
                "other environments untouched)"
            )

    def _left_behind(self, why: str) -> None:
        self.terminal.warn(
            f"the live endpoints may still exist ({why}); delete them with "
            f"`flash undeploy --all --env {LIVE_ENVIRONMENT} --app {self.app_name}`"
        )


_SERVING = ("starting", "ready")


def _saved_at(paths: list[Path]) -> float:
    """When the change happened: the newest modification time among the changed files."""
    times = []
    for path in paths:
        with contextlib.suppress(OSError):
            times.append(path.stat().st_mtime)
    return max(times) if times else time.time()


def _rel(project: Path, path: Path) -> str:
    try:
        return path.relative_to(project).as_posix()
    except ValueError:
        return str(path)


def _describe_changes(previous: Snapshot, current: Snapshot, result: DeployResult) -> str:
    parts = []
    added = sorted(set(current.endpoints) - set(previous.endpoints))
    removed = sorted(set(previous.endpoints) - set(current.endpoints))
    if added:
        parts.append("new endpoint(s): " + ", ".join(added))
    if removed:
        parts.append("removed endpoint(s): " + ", ".join(removed))
    for name, ep in sorted(current.endpoints.items()):
        old = previous.endpoints.get(name)
        if old is not None and old.routes != ep.routes:
            parts.append(f"{name} routes: {', '.join(ep.paths())}")
    updated = [ep.resource for ep in result.endpoints if ep.action == "updated"]
    if updated:
        parts.append("new settings: " + ", ".join(updated))
    return "; " + "; ".join(parts) if parts else ""


def _quiet_server_class() -> type[uvicorn.Server]:
    """uvicorn's Server without its own signal handling (the session handles signals)."""
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

    return Server
