"""Serving a queue-based resource: its handler on our job loop, or on the official one.

``FLASH_QUEUE_LOOP=flash`` (the default) runs :class:`~flash_runtime.worker.job_loop.JobLoop`;
``FLASH_QUEUE_LOOP=runpod`` hands the same handler to ``runpod.serverless.start`` for anyone who
wants the official loop, with its behaviour and its costs: it imports in over a second, its
production start runs the SDK's fitness checks (memory, disk, outbound network to 8.8.8.8:53,
GPU), its scaler sleeps a second whenever its slots are full, and a result whose post still fails
after three attempts is dropped. The SDK's own switches ``RUNPOD_SKIP_AUTO_SYSTEM_CHECKS=true``
and ``RUNPOD_SKIP_GPU_CHECK=true`` turn the fitness checks off where there is no network.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable

from ..errors import FlashError
from .config import WorkerConfig
from .handler import Handler
from .job_loop import JobLoop, JobURLs
from .loader import LoadedResource

log = logging.getLogger("flash_runtime.worker.queue")

LOOPS = ("flash", "runpod")


def serve(config: WorkerConfig, loaded: LoadedResource) -> int:
    """Take and run jobs for ``loaded`` until SIGTERM or SIGINT; return the exit code.

    On our loop the first signal stops job-taking; in-flight jobs finish and their results are
    delivered, then it returns 0. A second signal cancels the in-flight jobs (exit code 1). The
    official loop handles signals its own way: it stops once its current long-polls return and
    its in-flight jobs are done.
    """
    handler = Handler(loaded)
    if config.queue_loop not in LOOPS:
        raise FlashError(
            f"FLASH_QUEUE_LOOP={config.queue_loop!r} must be 'flash' (our job loop, the "
            "default) or 'runpod' (runpod.serverless.start)"
        )
    if config.queue_loop == "runpod":
        if loaded.startup is not None:
            asyncio.run(loaded.startup())
        return _serve_official(config, handler)
    job_loop = JobLoop(JobURLs.from_config(config), handler)
    log.info(
        "queue worker %s serving %s with %d slot(s)",
        job_loop.protocol.worker_id,
        handler.name,
        handler.slots,
    )
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        if loaded.startup is not None:  # a 2.0 app's coroutine init hook, on the serving loop
            runner.run(loaded.startup())
        return runner.run(_serve_until_signalled(job_loop))


async def _serve_until_signalled(job_loop: JobLoop) -> int:
    loop = asyncio.get_running_loop()

    def on_signal(signum: signal.Signals) -> None:
        if job_loop.stopping:
            log.warning("%s again: cancelling in-flight jobs", signum.name)
            job_loop.stop(force=True)
        else:
            log.info("%s: taking no more jobs, finishing in-flight ones", signum.name)
            job_loop.stop()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        return await job_loop.run()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


# The official SDK's log level names (it has WARN, not WARNING, and no CRITICAL).
_RUNPOD_LEVELS = {"DEBUG": "DEBUG", "WARNING": "WARN", "ERROR": "ERROR", "CRITICAL": "ERROR"}


def _serve_official(config: WorkerConfig, handler: Handler) -> int:
    """Run ``handler`` under ``runpod.serverless.start``, as a hand-written runpod worker would.

    ``concurrency_modifier`` fixes the slots at ``max_concurrency``; ``return_aggregate_stream``
    makes a generator's result hold its chunks, as our loop's does.
    """
    if not config.webhook_get_job:
        # Without it the SDK runs its local test mode, which wants a test_input.json and exits.
        raise FlashError(
            "FLASH_QUEUE_LOOP=runpod needs RUNPOD_WEBHOOK_GET_JOB (the platform sets it)"
        )
    # The SDK logs at DEBUG unless told otherwise; follow the worker's level. It reads the
    # variable (and the RUNPOD_WEBHOOK_* ones) when it is imported, hence before the import.
    os.environ.setdefault("RUNPOD_LOG_LEVEL", _RUNPOD_LEVELS.get(config.log_level, "INFO"))
    slots = handler.slots
    log.info(
        "queue worker serving %s with %d slot(s) on the official runpod loop", handler.name, slots
    )
    try:
        import runpod.serverless
    except ImportError as err:
        raise FlashError(
            "FLASH_QUEUE_LOOP=runpod needs the runpod package, which Runpod's images have and "
            "flash_runtime's own do not (it would double their size): add runpod to the "
            "endpoint's dependencies, or pip install 'flash-runtime[runpod]' "
            f"({err})"
        ) from None

    runpod.serverless.start(
        {
            "handler": handler.runpod_handler,
            "concurrency_modifier": lambda _current: slots,
            "return_aggregate_stream": True,
        }
    )
    return 0
