"""The platform's runtime: runs endpoints as worker processes, scales them, keeps their jobs.

``PlatformRuntime`` implements :class:`~flash_runtime.platform.model.Runtime` (what the control
plane calls) and holds the state the HTTP front ends use: the job store (``jobs.py``), the worker
supervisor (``supervisor.py``) and one load balancer per load-balanced endpoint
(``balancer.py``).

Scaling, checked every ``tick_s`` and whenever something changes (per endpoint):

* ``workersMin`` workers are kept running (crashed ones restarted with exponential backoff,
  0.5 s doubling up to ``backoff_max_s``); never more than ``workersMax``.
* Queue-based, ``QUEUE_DELAY``: one more worker when the oldest queued job has waited longer
  than ``scalerValue`` seconds. ``REQUEST_COUNT``: one more when queued plus running jobs exceed
  ``scalerValue`` per worker.
* Load-balanced (always by request count): one more when in-flight requests exceed
  ``scalerValue`` per ready worker.
* Cold start: work waiting and no worker at all starts one at once, without waiting
  ``scalerValue`` seconds (Runpod does the same: a scaled-to-zero endpoint wakes on demand).
* Scaling up adds one worker at a time and waits for it to boot before adding the next.
* A ready worker without work for ``idleTimeout`` seconds is drained (never below the minimum).
* A changed template (image, env) rolls: workers of the new spec start, the old ones keep
  serving until one new worker is ready, then drain (finish in-flight work, exit). A new build
  alone rolls nothing, as on Runpod: workers started after it run it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import secrets
import signal
import socket
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

from ..errors import FlashError
from ..protocol.local import PlatformConfig
from . import db, gpus, scaling, webhooks
from .appdirs import AppDirs
from .jobs import Job, JobStore
from .metrics import Labels, Metrics
from .model import EndpointSpec
from .pods import Pods
from .secretstore import SecretStore
from .settings import RuntimeSettings
from .state import EndpointState
from .storage import SCHEMA, generation_of, load_endpoints, save_endpoint
from .supervisor import WORKER_COMMAND, Supervisor, Worker, WorkerState

log = logging.getLogger("flash_runtime.platform")

HOUSEKEEPING_EVERY_S = 5.0


def labels_of(ep: EndpointState) -> Labels:
    """An endpoint's metric labels."""
    return (("endpoint", ep.id), ("name", ep.spec.name))


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class PlatformRuntime:
    """Runs the endpoints the control plane applies; see the module docstring."""

    def __init__(
        self,
        config: PlatformConfig,
        settings: RuntimeSettings | None = None,
        *,
        worker_command: Sequence[str] = WORKER_COMMAND,
    ) -> None:
        self.config = config
        self.settings = settings or RuntimeSettings.from_env()
        # External workers (attached by hand) authenticate with this key, the platform's own
        # workers with one each (``Worker.key``); never the user's. New ones per platform start
        # also shut out orphans of a previous platform.
        self.worker_key = "wk_" + secrets.token_urlsafe(24)
        self.endpoints: dict[str, EndpointState] = {}
        self.conn = db.connect(config.db_path)
        self.conn.executescript(SCHEMA)
        self.jobs = JobStore(self.conn, self.settings, self)
        self.metrics = Metrics()
        self.gpus = gpus.GpuPool(gpus.detect())
        self.secrets = SecretStore(self.conn)
        self.pods = Pods(config, self.secrets)
        self.supervisor = Supervisor(
            config,
            self.settings,
            on_exit=self._worker_exited,
            command=worker_command,
            gpus=self.gpus,
            secrets=self.secrets,
        )
        self.session: aiohttp.ClientSession | None = None
        self._workers: dict[str, Worker] = {}
        self._by_key: dict[str, Worker] = {}  # each worker's own credential
        self._kick = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self.app_dirs = AppDirs(config.apps_dir)
        self._closing = False
        self.started_at = time.time()
        self.python_versions = self.supervisor.backend.python_versions
        self.workers_backend: str = self.supervisor.backend.name

    # -- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Recover jobs and endpoints from SQLite, then start scaling."""
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            auto_decompress=False,  # the balancer passes bodies through untouched
        )
        requeued = self.jobs.recover()
        if requeued:
            log.warning("%d job(s) were running when the platform stopped: queued again", requeued)
        for spec, port in load_endpoints(self.conn):
            try:
                await self._add(spec, port)
            except Exception:
                log.exception("endpoint %s (%s) could not be restored", spec.id, spec.name)
        self._loop_task = asyncio.create_task(self._run(), name="autoscaler")

    async def close(self) -> None:
        """Stop every worker (they get ``shutdown_grace_s`` to finish in-flight work)."""
        if self._closing:
            return
        self._closing = True
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for ep in self.endpoints.values():
            if ep.balancer is not None:
                ep.balancer.closing = True
        workers = [w for w in self._workers.values() if w.alive]
        for worker in workers:
            self._drain(worker, self.settings.shutdown_grace_s)
        await self.supervisor.stop_all(workers, self.settings.shutdown_grace_s)
        self.jobs.shutdown()
        for ep in self.endpoints.values():
            ep.notify()
            if ep.balancer is not None:
                await ep.balancer.close()
        for task in list(self._background):
            task.cancel()
        await self.pods.close()
        if self.session is not None:
            await self.session.close()
        await asyncio.to_thread(self.supervisor.backend.close)

    def close_db(self) -> None:
        self.conn.close()

    # -- Runtime protocol -------------------------------------------------------------------

    async def apply(self, spec: EndpointSpec) -> str:
        """Create or update an endpoint; returns its URL. See ``model.Runtime.apply``."""
        if spec.type not in ("qb", "lb"):
            raise FlashError(
                f"endpoint {spec.name!r}: type must be 'qb' or 'lb', not {spec.type!r}"
            )
        if not Path(spec.artifact_path).is_file():
            raise FlashError(
                f"endpoint {spec.name!r}: build artifact {spec.artifact_path} does not exist"
            )
        notices = self._gpu_notices(spec)
        # What the workers need (an image environment, an image with the system packages):
        # made once, possibly minutes the first time, off the loop.
        notices += await asyncio.to_thread(
            self.supervisor.backend.prepare, spec, lambda line: log.info("%s: %s", spec.name, line)
        )
        for notice in notices:
            log.info("endpoint %s (%s): %s", spec.id, spec.name, notice)
        ep = self.endpoints.get(spec.id)
        if ep is None:
            ep = await self._add(spec, None)
            ep.boot_check = spec.workers_min == 0
        else:
            await self._update(ep, spec)
        ep.notices = notices
        save_endpoint(self.conn, spec, ep.lb_port)
        self.kick()
        url = self.url_of(spec.id)
        assert url is not None
        return url

    def _gpu_notices(self, spec: EndpointSpec) -> list[str]:
        """Where a GPU endpoint's workers run here; refuses one whose workers never could."""
        if not spec.gpu_count:
            return []
        host = self.gpus.gpus
        if host and spec.gpu_count > len(host):
            have = ", ".join(f"{g.index}: {g.name}" for g in host)
            raise FlashError(
                f"endpoint {spec.name!r} asks for {spec.gpu_count} GPUs per worker and this "
                f"machine has {len(host)} ({have}): lower gpu_count to deploy it here"
            )
        notice = gpus.placement_notice(spec.gpu_ids, spec.gpu_count, host)
        return [notice] if notice else []

    async def remove(self, endpoint_id: str) -> None:
        """Stop an endpoint's workers and forget it; its unfinished jobs are cancelled."""
        ep = self.endpoints.pop(endpoint_id, None)
        self.conn.execute("DELETE FROM runtime_endpoints WHERE id = ?", (endpoint_id,))
        if ep is None:
            return
        ep.removed = True
        self.jobs.forget_endpoint(endpoint_id)
        workers = [w for w in ep.workers.values() if w.alive]
        for worker in workers:
            self._drain(worker, self.settings.shutdown_grace_s)
        self._spawn_background(self.supervisor.stop_all(workers, self.settings.shutdown_grace_s))
        if ep.balancer is not None:
            await ep.balancer.close()
        ep.notify()

    def url_of(self, endpoint_id: str) -> str | None:
        """QB: ``{platform}/v2/{id}``; LB: ``http://{host}:{its port}``."""
        ep = self.endpoints.get(endpoint_id)
        if ep is None:
            return None
        if ep.spec.type == "lb":
            return f"http://{self.config.host}:{ep.lb_port}"
        return f"{self.config.url}/v2/{endpoint_id}"

    def failure(self, endpoint_id: str) -> dict[str, Any] | None:
        """See ``model.Runtime.failure``."""
        ep = self.endpoints.get(endpoint_id)
        if ep is None or not ep.failures or ep.last_error is None:
            return None
        if any(w.state is WorkerState.READY for w in ep.current()):
            return None
        return ep.last_error

    # -- lookups for the HTTP front ends ----------------------------------------------------

    def endpoint(self, endpoint_id: str) -> EndpointState | None:
        return self.endpoints.get(endpoint_id)

    def find(self, id_or_name: str) -> EndpointState | None:
        """An endpoint by id, else by name."""
        ep = self.endpoints.get(id_or_name)
        if ep is not None:
            return ep
        return next((e for e in self.endpoints.values() if e.spec.name == id_or_name), None)

    def worker_by_key(self, key: str) -> Worker | None:
        """The live worker this platform started with ``key`` as its own credential."""
        worker = self._by_key.get(key) if key else None
        return worker if worker is not None and worker.alive else None

    def worker(self, ep: EndpointState, worker_id: str) -> Worker:
        """A worker calling the worker API. Unknown ids are external workers (no process we
        run, e.g. a debugger attached by hand): they get jobs like any other."""
        worker = ep.workers.get(worker_id)
        if worker is None:
            worker = Worker(id=worker_id, endpoint_id=ep.id, generation=ep.generation)
            ep.workers[worker_id] = worker
            self._workers[worker_id] = worker
            log.info("external worker %s joined endpoint %s", worker_id, ep.id)
        worker.seen()
        return worker

    def worker_ready(self, ep: EndpointState, worker: Worker) -> None:
        """A worker is ready for work (first job-take, or first ``/ping`` 200)."""
        if not worker.mark_ready():
            return
        log.info(
            "worker %s of %s ready after %.2fs",
            worker.id,
            ep.id,
            (worker.ready_at or 0) - worker.started_at,
        )
        ep.restart_clean()
        if worker.generation == ep.generation:
            ep.boot_check = False
        ep.notify()
        self.kick()

    def job_submitted(self, ep: EndpointState) -> None:
        """A job was queued: start a worker at once if there is none (cold start)."""
        if not ep.current():
            self.kick()

    def reconcile(self, worker: Worker, reported: set[str]) -> None:
        """Requeue jobs leased to ``worker`` that its ping does not list (see JobStore)."""
        grace = 2 * self.settings.ping_interval_ms / 1000 + 1
        lost = self.jobs.reconcile(worker.id, reported, grace)
        if lost:
            log.warning(
                "worker %s does not run job(s) %s it was given: queued again",
                worker.id,
                ", ".join(job.id for job in lost),
            )

    def refresh_worker(self, worker: Worker) -> None:
        """The worker asked to be replaced after its job (``refresh_worker``/``stopPod``)."""
        self._drain(worker)
        self.kick()

    def _drain(self, worker: Worker, grace: float | None = None) -> None:
        """Stop giving a worker work and let it finish what it holds (SIGTERM)."""
        self.supervisor.drain(worker, grace)
        self.jobs.release_parked(worker.id)

    def kick(self) -> None:
        """Run the autoscaler now rather than at the next tick."""
        self._kick.set()

    # -- JobEvents --------------------------------------------------------------------------

    def job_stopped(self, worker_id: str, job_id: str) -> None:
        worker = self._workers.get(worker_id)
        if worker is not None and worker.alive:
            worker.signal_stop(job_id)

    def job_finished(self, job: Job) -> None:
        ep = self.endpoints.get(job.endpoint_id)
        labels = labels_of(ep) if ep is not None else (("endpoint", job.endpoint_id),)
        metrics = self.metrics
        metrics.count("flash_jobs_finished_total", (*labels, ("status", job.status.value)))
        if job.started_at is not None:
            metrics.observe("flash_job_queue_seconds", labels, job.started_at - job.created_at)
            if job.completed_at is not None:
                execution = job.completed_at - job.started_at
                metrics.observe("flash_job_execution_seconds", labels, execution)
        if job.webhook:
            assert self.session is not None
            self._spawn_background(webhooks.deliver(self.session, job.webhook, job.payload()))

    # -- endpoints --------------------------------------------------------------------------

    async def _add(self, spec: EndpointSpec, port: int | None) -> EndpointState:
        ep = EndpointState(
            spec=spec,
            generation=generation_of(spec),
            app_dir=await self.app_dirs.for_artifact(
                Path(spec.artifact_path), spec.build_id or spec.id
            ),
        )
        self.endpoints[spec.id] = ep
        if spec.type == "lb":
            await self._start_balancer(ep, port)
        return ep

    async def _update(self, ep: EndpointState, spec: EndpointSpec) -> None:
        old = ep.spec
        ep.spec = spec
        if spec.type != old.type:
            if old.type == "lb" and ep.balancer is not None:
                await ep.balancer.close()
                ep.balancer = None
            if spec.type == "lb":
                await self._start_balancer(ep, ep.lb_port)
        # Workers started from now on run the new artifact (a new build alone rolls nothing).
        ep.app_dir = await self.app_dirs.for_artifact(
            Path(spec.artifact_path), spec.build_id or spec.id
        )
        generation = generation_of(spec)
        if generation == ep.generation:
            return
        log.info("endpoint %s (%s): new template %s, rolling", spec.id, spec.name, generation)
        ep.generation = generation
        ep.restart_clean()
        ep.boot_check = spec.workers_min == 0
        outdated = ep.outdated()
        for worker in outdated:
            if worker.state is WorkerState.STARTING or spec.type != old.type:
                self._drain(worker)  # never served: nothing to keep
        ep.roll_target = min(len([w for w in outdated if w.serving]), max(spec.workers_max, 0))

    async def _start_balancer(self, ep: EndpointState, port: int | None) -> None:
        from .balancer import Balancer

        balancer = Balancer(self, ep)
        try:
            await balancer.start(port or free_port(self.config.host))
        except OSError as err:
            if port is None:
                raise
            log.warning("endpoint %s: port %s is taken (%s); its URL changes", ep.id, port, err)
            await balancer.start(free_port(self.config.host))
        ep.balancer = balancer
        ep.lb_port = balancer.port
        save_endpoint(self.conn, ep.spec, ep.lb_port)

    # -- workers ----------------------------------------------------------------------------

    async def _spawn(self, ep: EndpointState) -> None:
        port = free_port(self.config.host) if ep.spec.type == "lb" else None
        try:
            worker = await self.supervisor.spawn(ep.spec, ep.generation, ep.app_dir, port)
        except OSError as err:
            ep.failures += 1
            ep.not_before = time.monotonic() + self._backoff(ep.failures)
            ep.last_error = {"message": f"cannot start worker: {err}", "at": time.time()}
            log.error("endpoint %s: cannot start worker: %s", ep.id, err)
            return
        ep.workers[worker.id] = worker
        self._workers[worker.id] = worker
        if worker.key:
            self._by_key[worker.key] = worker
        if ep.balancer is not None:
            ep.balancer.watch(worker)

    def _worker_exited(self, worker: Worker) -> None:
        self._workers.pop(worker.id, None)
        if worker.key:
            self._by_key.pop(worker.key, None)
        unasked = worker.drain_deadline is None and not self._closing
        # A worker that ended itself (an exit, an abort, a segfault) while running a job may
        # have been ended by it; one killed from outside (SIGKILL, SIGTERM) says nothing about
        # the job, whose attempts are then not counted against it.
        external = worker.exit_code in (-signal.SIGKILL, -signal.SIGTERM)
        died = f"exited with code {worker.exit_code}" if unasked and not external else None
        held = bool(self.jobs.leased(worker.id))
        requeued = self.jobs.release_worker(worker.id, died=died)
        self.jobs.release_parked(worker.id)
        if requeued:
            log.warning(
                "worker %s exited holding %d job(s): queued again", worker.id, len(requeued)
            )
        ep = self.endpoints.get(worker.endpoint_id)
        if ep is None or ep.workers.get(worker.id) is not worker:
            return
        del ep.workers[worker.id]
        if worker.drain_deadline is None and not self._closing:
            self.metrics.count("flash_worker_restarts_total", labels_of(ep))
            delay = ep.crashed(worker, time.monotonic(), self._backoff, held_work=held)
            log.warning(
                "worker %s of %s %s with code %s; restarting in %.1fs (log: %s)",
                worker.id,
                ep.id,
                "failed to boot" if worker.ready_at is None else "crashed",
                worker.exit_code,
                delay,
                worker.log_path,
            )
        ep.notify()
        self.kick()

    def _backoff(self, failures: int) -> float:
        return float(min(self.settings.backoff_max_s, 0.5 * 2 ** max(0, failures - 1)))

    # -- autoscaler -------------------------------------------------------------------------

    async def _run(self) -> None:
        last_housekeeping = 0.0
        last_tick = time.monotonic()
        while True:
            self._kick.clear()  # a kick during the tick runs the next one at once
            try:
                now = time.monotonic()
                self._after_stall(now - last_tick, now)
                last_tick = now
                for ep in list(self.endpoints.values()):
                    self._reap(ep, now)
                    await self._scale(ep, now)
                if now - last_housekeeping >= HOUSEKEEPING_EVERY_S:
                    last_housekeeping = now
                    self.jobs.expire()
                    self.supervisor.rotate_logs(list(self._workers.values()))
                    self._collect_app_dirs()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("autoscaler tick failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.tick_s):
                    await self._kick.wait()

    def _collect_app_dirs(self) -> None:
        """Extraction directories no endpoint and no live worker uses any more go."""
        in_use = {ep.app_dir for ep in self.endpoints.values()}
        in_use |= {w.app_dir for w in self._workers.values() if w.app_dir is not None}
        for path in self.app_dirs.collect(in_use):
            log.info("deleted %s: no endpoint or worker uses it", path)

    def _after_stall(self, gap: float, now: float) -> None:
        """When the platform itself did not run for a while (stopped, suspended, starved), its
        workers were not silent: it could not hear them. They get a fresh lease instead of
        being taken for hung when it wakes."""
        if gap <= max(2 * self.settings.tick_s, self.settings.lease_timeout_s / 2):
            return
        log.warning("the platform did not run for %.1fs: its workers' leases start anew", gap)
        for worker in self._workers.values():
            worker.last_seen = max(worker.last_seen, now)

    def _reap(self, ep: EndpointState, now: float) -> None:
        """End the leases of workers not heard from; kill drains that overran their grace."""
        lease_timeout = self.settings.lease_timeout_s
        for worker in list(ep.workers.values()):
            draining = worker.state is WorkerState.DRAINING and worker.drain_deadline is not None
            if draining and now > (worker.drain_deadline or 0):
                log.warning("worker %s did not exit after its drain grace: killed", worker.id)
                self.supervisor.kill(worker)
            if now - worker.last_seen <= lease_timeout:
                continue
            if ep.spec.type == "qb" and self.jobs.lease_count(worker.id):
                requeued = self.jobs.release_worker(worker.id)
                log.warning(
                    "worker %s silent for %.1fs holding %d job(s): queued again",
                    worker.id,
                    now - worker.last_seen,
                    len(requeued),
                )
                if worker.proc is not None:
                    self.supervisor.kill(worker)  # hung: replace it
            if worker.proc is None and now - worker.last_seen > 3 * self.settings.long_poll_s:
                del ep.workers[worker.id]  # an external worker that went away
                self._workers.pop(worker.id, None)

    async def _scale(self, ep: EndpointState, now: float) -> None:
        """Carry out the scaling policy's plan for ``ep`` (:func:`.scaling.plan`)."""
        spec = ep.spec
        serving = [*ep.current(), *ep.outdated()]
        workers = [
            scaling.WorkerView(
                id=w.id,
                ready=w.state is WorkerState.READY,
                outdated=w.generation != ep.generation,
                ours=w.proc is not None,
                busy=self.jobs.lease_count(w.id) + w.in_flight,
                in_flight=w.in_flight,
                last_active=w.last_active,
            )
            for w in serving
        ]
        view = scaling.EndpointView(
            kind=spec.type,
            workers_min=spec.workers_min,
            workers_max=spec.workers_max,
            scaler_type=spec.scaler_type,
            scaler_value=spec.scaler_value,
            idle_timeout=spec.idle_timeout,
            roll_target=ep.roll_target,
            not_before=ep.not_before,
            lb_waiting=ep.lb_waiting,
            boot_check=ep.boot_check,
        )
        if spec.type == "qb":
            queue = self.jobs.queue(ep.id)
            view = dataclasses.replace(
                view,
                queued=len(queue.pending),
                running=queue.running,
                oldest_wait=self.jobs.oldest_wait(ep.id),
            )
        decided = scaling.plan(view, workers, now)
        ep.roll_target = decided.roll_target
        by_id = {w.id: w for w in serving}
        for worker_id, why in decided.drain:
            if why == "idle":
                log.info(
                    "worker %s of %s idle for %ss: draining", worker_id, ep.id, spec.idle_timeout
                )
            self._drain(by_id[worker_id])
        for _ in range(decided.spawn):
            await self._spawn(ep)

    def _spawn_background(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def all_workers(self) -> Iterable[Worker]:
        return self._workers.values()

    def render_metrics(self) -> str:
        """``/metrics``: the counters, and the gauges as they are now."""
        gauges: list[tuple[str, str, str, Labels, float]] = []
        for ep in self.endpoints.values():
            labels = labels_of(ep)
            if ep.spec.type == "qb":
                queue = self.jobs.queue(ep.id)
                gauges.append(("flash_jobs_queued", "gauge", "Jobs waiting for a worker.", labels,
                               len(queue.pending)))  # fmt: skip
                gauges.append(("flash_jobs_running", "gauge", "Jobs a worker holds.", labels,
                               queue.running))  # fmt: skip
            states = {state: 0 for state in ("starting", "ready", "draining")}
            for worker in ep.workers.values():
                if worker.alive:
                    states[worker.state.value] = states.get(worker.state.value, 0) + 1
            for state, n in states.items():
                gauges.append(("flash_workers", "gauge", "Workers by state.",
                               (*labels, ("state", state)), n))  # fmt: skip
        return self.metrics.render(gauges)
