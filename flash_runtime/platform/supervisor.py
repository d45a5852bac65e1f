"""Worker processes: start them with a Runpod worker's environment, watch them, stop them.

Each worker is its image's entry (``python -m flash_runtime.bootstrap``, or the official image's)
with the variables a Runpod worker gets, its own pod id and a log file, started by a backend
(``backends.py``: a process in the image's environment, or a container of the image). The
supervisor only runs workers; the runtime decides how many (``runtime.py``) and the job store
decides what they hold (``jobs.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import secrets
import shutil
import signal
import string
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..protocol.local import PlatformConfig
from ..protocol.wire import worker_webhooks
from ..worker.request_context import utc_time
from .backends import WORKER_COMMAND, Backend, Launch, ProcessBackend
from .gpus import GpuPool
from .model import EndpointSpec
from .secretstore import SecretStore
from .settings import RuntimeSettings

log = logging.getLogger("flash_runtime.platform")

__all__ = ["WORKER_COMMAND", "Supervisor", "Worker", "WorkerState"]
# Logs of this many most recent workers are kept per endpoint.
KEEP_LOGS = 20
_ID_ALPHABET = string.ascii_lowercase + string.digits


def new_id(length: int = 14) -> str:
    """A Runpod-style id: lowercase letters and digits."""
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(length))


class WorkerState(StrEnum):
    STARTING = "starting"  # spawned; not yet polling for jobs / answering /ping with 200
    READY = "ready"
    DRAINING = "draining"  # told to stop (SIGTERM): finishes in-flight work, gets no more
    EXITED = "exited"


@dataclass(eq=False)
class Worker:
    """One worker process (or an external worker that speaks the protocol: ``proc`` is None)."""

    id: str
    endpoint_id: str
    generation: str  # which version of the endpoint's spec it runs (see storage.generation_of)
    log_path: Path | None = None
    port: int | None = None  # load-balanced workers' HTTP port
    proc: asyncio.subprocess.Process | None = None
    state: WorkerState = WorkerState.STARTING
    started_at: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)
    ready_at: float | None = None
    last_seen: float = field(default_factory=time.monotonic)  # last request from it
    last_active: float = field(default_factory=time.monotonic)  # last time it had work
    in_flight: int = 0  # load-balanced requests being proxied to it
    healthy: bool = False  # load-balanced: its last /ping answered 200
    last_ping: str | None = None  # load-balanced: its last /ping's answer, in words
    exit_code: int | None = None
    drain_deadline: float | None = None
    # Its own credential (RUNPOD_AI_API_KEY, FLASH_WORKER_KEY): good for this worker id on this
    # endpoint only, and for its load-balanced port. None for external workers.
    key: str | None = None
    app_dir: Path | None = None  # where its artifact is extracted (kept while it lives)
    launch: Launch | None = None  # how its backend started it
    gpus: list[int] = field(default_factory=list)  # the host GPUs it holds
    _stops: list[str] = field(default_factory=list)
    _stop_waiters: set[asyncio.Future[None]] = field(default_factory=set)

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    @property
    def alive(self) -> bool:
        return self.state is not WorkerState.EXITED

    @property
    def serving(self) -> bool:
        """Takes new work: started or ready, not draining."""
        return self.state in (WorkerState.STARTING, WorkerState.READY)

    def seen(self) -> None:
        self.last_seen = time.monotonic()

    def mark_ready(self) -> bool:
        """Record readiness; true the first time."""
        if self.state is WorkerState.STARTING:
            self.state = WorkerState.READY
            self.ready_at = time.monotonic()
            self.last_active = self.ready_at
            return True
        return False

    def signal_stop(self, job_id: str) -> None:
        """Queue a job-stop signal for this worker and answer its held job-stop poll."""
        self._stops.append(job_id)
        self._wake_stop_polls()

    async def next_stops(self, hold: float) -> list[str]:
        """Job ids to stop, waiting up to ``hold`` s for one (the job-stop long-poll)."""
        if not self._stops and hold > 0 and self.alive:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._stop_waiters.add(waiter)
            try:
                async with asyncio.timeout(hold):
                    await waiter
            except TimeoutError:
                pass
            finally:
                self._stop_waiters.discard(waiter)
        stops, self._stops = self._stops, []
        return stops

    def release_polls(self) -> None:
        """Answer its held job-stop poll now (it is draining or gone)."""
        self._wake_stop_polls()

    def _wake_stop_polls(self) -> None:
        for waiter in self._stop_waiters:
            if not waiter.done():
                waiter.set_result(None)

    def info(self, *, jobs: int = 0) -> dict[str, Any]:
        """The worker as ``flash platform status`` shows it."""
        return {
            "id": self.id,
            "pid": self.pid,
            "state": self.state.value,
            "generation": self.generation,
            "port": self.port,
            "jobs": jobs,
            "inFlight": self.in_flight,
            "uptime": round(time.monotonic() - self.started_at, 1),
            "exitCode": self.exit_code,
            "log": str(self.log_path) if self.log_path else None,
            "gpus": self.gpus,
            "container": self.launch.container if self.launch else None,
        }


def make_backend(
    config: PlatformConfig, settings: RuntimeSettings, command: Sequence[str] = WORKER_COMMAND
) -> Backend:
    """The backend ``settings.workers`` names (``backends.py``, ``docker.py``)."""
    if settings.workers == "docker":
        from .docker import DockerBackend

        docker: Backend = DockerBackend(config, settings)
        return docker
    return ProcessBackend(config, settings, command)


def worker_environment(
    config: PlatformConfig,
    spec: EndpointSpec,
    *,
    worker_id: str,
    worker_key: str,
    app_dir: Path,
    port: int | None,
    ping_interval_ms: int,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The environment of one worker: what a Runpod worker of this endpoint would get.

    The platform's own ``FLASH_*``/``RUNPOD_*`` settings are not inherited (they configure the
    platform, not user code); ``spec.env`` is applied over the cross-endpoint defaults, and the
    protocol variables that identify the worker come last so nothing overrides them.
    """
    base = os.environ if base is None else base
    env = {
        k: v
        for k, v in base.items()
        if not k.startswith(("FLASH_", "RUNPOD_")) or k == "FLASH_HOME"
    }
    # Where "Runpod" is for cross-endpoint calls: this platform's GraphQL and serverless API.
    # The key and the environment id come from the deployer, and only to the endpoints whose
    # code calls another (as on Runpod), so a missing one fails here as it would there.
    env.update(RUNPOD_API_BASE_URL=config.url, RUNPOD_ENDPOINT_BASE_URL=f"{config.url}/v2")
    env.update(spec.env)
    env.update(
        PYTHONUNBUFFERED="1",
        FLASH_BUILD_ARTIFACT_PATH=str(spec.artifact_path),
        FLASH_APP_DIR=str(app_dir),
        FLASH_RESOURCE_NAME=spec.resource_name,
        FLASH_ENDPOINT_TYPE=spec.type,
        RUNPOD_ENDPOINT_ID=spec.id,
        RUNPOD_POD_ID=worker_id,
        RUNPOD_POD_HOSTNAME=worker_id,
        RUNPOD_AI_API_KEY=worker_key,
    )
    if spec.type == "lb":
        assert port is not None
        # The port is the platform's choice, whatever the template says (the Runpod SDK 2.0
        # puts PORT=80 and PORT_HEALTH=80 there): the health check goes to the same port.
        env.pop("PORT_HEALTH", None)
        env.update(PORT=str(port), FLASH_HOST="127.0.0.1", FLASH_WORKER_KEY=worker_key)
    else:
        # Templates the runpod SDK fills in: $ID is the worker id for job-take and the job id
        # for job-done/job-stream; the SDK appends "&..." so each URL already has a query.
        env.update(worker_webhooks(f"{config.url}/v2/{spec.id}", "gpu=local"))
        env["RUNPOD_PING_INTERVAL"] = str(ping_interval_ms)
    return env


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when the platform dies (Linux).

    Without it a killed platform would leave workers polling a dead address forever.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    parent = os.getpid()

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # the platform died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


class Supervisor:
    """Starts, stops and watches worker processes; tells ``on_exit`` when one ends."""

    def __init__(
        self,
        config: PlatformConfig,
        settings: RuntimeSettings,
        *,
        on_exit: Callable[[Worker], None],
        command: Sequence[str] = WORKER_COMMAND,
        backend: Backend | None = None,
        gpus: GpuPool | None = None,
        secrets: SecretStore | None = None,
    ) -> None:
        self.config = config
        self.secrets = secrets
        self.settings = settings
        self.on_exit = on_exit
        self.backend = backend or make_backend(config, settings, command)
        self.gpus = gpus or GpuPool([])
        self._watchers: set[asyncio.Task[None]] = set()
        self._preexec = _die_with_parent()
        self._live_logs: set[Path] = set()

    async def spawn(
        self, spec: EndpointSpec, generation: str, app_dir: Path, port: int | None = None
    ) -> Worker:
        """Start one worker of ``spec``; returns at once (the worker boots on its own)."""
        worker_id = new_id()
        worker_key = "wk_" + secrets.token_urlsafe(24)
        log_dir = self.config.logs_dir / spec.id
        log_dir.mkdir(parents=True, exist_ok=True)
        _prune_logs(log_dir, self._live_logs)
        log_path = log_dir / f"{worker_id}.log"
        env = worker_environment(
            self.config,
            spec,
            worker_id=worker_id,
            worker_key=worker_key,
            app_dir=app_dir,
            port=port,
            ping_interval_ms=self.settings.ping_interval_ms,
            # A container gets what Runpod gives a worker, nothing of this machine's.
            base={} if self.backend.name == "docker" else None,
        )
        if self.secrets is not None:  # {{ RUNPOD_SECRET_name }} references: the values
            env = self.secrets.render(env)
        gpus = []
        if spec.gpu_count and self.gpus.gpus:
            got = self.gpus.acquire(worker_id, spec.gpu_count, spec.gpu_ids)
            if got is None:
                raise OSError(
                    f"no {spec.gpu_count} free GPU(s) for another worker: this machine's "
                    f"{len(self.gpus.gpus)} are held by other workers"
                )
            gpus = got
        try:
            launch = self.backend.launch(spec, worker_id, env, gpus)
        except BaseException:
            self.gpus.release(worker_id)
            raise
        worker = Worker(
            id=worker_id,
            endpoint_id=spec.id,
            generation=generation,
            log_path=log_path,
            port=port,
            key=worker_key,
            app_dir=app_dir,
            launch=launch,
            gpus=[g.index for g in gpus],
        )
        with open(log_path, "ab") as log_file:
            log_file.write(
                f"{utc_time(time.time())} [flash platform] worker {worker_id} of endpoint "
                f"{spec.id} ({spec.name}),"
                f" resource {spec.resource_name}, build {spec.build_id or '-'}"
                f"{f', port {port}' if port else ''}\n".encode()
            )
            log_file.flush()
            try:
                worker.proc = await asyncio.create_subprocess_exec(
                    *launch.command,
                    env=launch.env,
                    cwd=launch.cwd,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=asyncio.subprocess.STDOUT,
                    # Its own session: a Ctrl-C on a foreground platform reaches the platform,
                    # which then stops workers gracefully, instead of killing them mid-job.
                    start_new_session=True,
                    preexec_fn=self._preexec,
                )
            except BaseException:
                self.gpus.release(worker_id)
                raise
        self._live_logs.add(log_path)
        log.info("worker %s of %s started (pid %s)", worker_id, spec.id, worker.pid)
        watcher = asyncio.create_task(self._watch(worker), name=f"watch-{worker_id}")
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return worker

    async def _watch(self, worker: Worker) -> None:
        assert worker.proc is not None
        code = self.backend.exit_code(await worker.proc.wait())
        if worker.log_path is not None:
            self._live_logs.discard(worker.log_path)
        worker.exit_code = code
        worker.state = WorkerState.EXITED
        self.gpus.release(worker.id)
        if worker.launch is not None and worker.launch.scratch is not None:
            shutil.rmtree(worker.launch.scratch, ignore_errors=True)
        worker.release_polls()
        if worker.log_path is not None:
            with contextlib.suppress(OSError), open(worker.log_path, "ab") as f:
                stamp = utc_time(time.time())
                f.write(
                    f"{stamp} [flash platform] worker {worker.id} exited with code {code}\n".encode()
                )
        log.info("worker %s of %s exited with code %s", worker.id, worker.endpoint_id, code)
        self.on_exit(worker)

    def drain(self, worker: Worker, grace: float | None = None) -> None:
        """Ask a worker to finish its in-flight work and exit (SIGTERM); SIGKILL after grace."""
        if worker.state in (WorkerState.DRAINING, WorkerState.EXITED):
            return
        worker.state = WorkerState.DRAINING
        grace = self.settings.drain_grace_s if grace is None else grace
        worker.drain_deadline = time.monotonic() + grace
        worker.release_polls()
        if worker.proc is not None and worker.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signal.SIGTERM)

    def kill(self, worker: Worker) -> None:
        """SIGKILL a worker (a drain that overran its grace, or one that stopped answering)."""
        if worker.proc is not None and worker.proc.returncode is None:
            if worker.launch is not None:
                self.backend.kill(worker.launch)  # a container outlives its client
            with contextlib.suppress(ProcessLookupError):
                worker.proc.kill()

    async def stop_all(self, workers: Sequence[Worker], grace: float) -> None:
        """Drain ``workers`` and wait for them to exit, killing those still alive after grace."""
        for worker in workers:
            self.drain(worker, grace)
        procs = [w.proc for w in workers if w.proc is not None and w.proc.returncode is None]
        if not procs:
            return
        _, pending = await asyncio.wait(
            [asyncio.ensure_future(p.wait()) for p in procs], timeout=grace
        )
        if pending:
            for worker in workers:
                self.kill(worker)
            await asyncio.wait(pending, timeout=5)

    def rotate_logs(self, workers: Sequence[Worker]) -> None:
        """Copy-truncate logs over the size cap (the workers keep appending to the same file)."""
        for worker in workers:
            path = worker.log_path
            if path is None:
                continue
            try:
                if path.stat().st_size <= self.settings.log_max_bytes:
                    continue
                shutil.copyfile(path, path.with_suffix(".log.1"))
                os.truncate(path, 0)
            except OSError:
                continue


def _prune_logs(log_dir: Path, live: set[Path]) -> None:
    """Delete the oldest logs of exited workers, keeping ``KEEP_LOGS`` per endpoint."""
    logs = sorted(
        (p for p in log_dir.glob("*.log") if p not in live), key=lambda p: p.stat().st_mtime
    )
    for old in logs[: max(0, len(logs) - KEEP_LOGS + 1)]:
        with contextlib.suppress(OSError):
            old.unlink()
            old.with_suffix(".log.1").unlink(missing_ok=True)


def log_tail(path: Path | None, lines: int = 20, max_bytes: int = 16384) -> list[str]:
    """The last lines of a worker's log (for crash reports)."""
    if path is None:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()[-lines:]
