"""The runtime's tunables: protocol timings, retention and limits, each with an env override.

Defaults suit a developer machine; tests shorten the timings. Every knob is read once, when the
platform starts (``RuntimeSettings.from_env``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from ..envvars import number
from ..errors import FlashError

# Runpod's serverless API refuses request bodies over 20 MB.
MAX_REQUEST_BYTES = 20 * 1024 * 1024


def _number(env: Mapping[str, str], key: str, default: float) -> float:
    return number(env, key, default)


@dataclass(frozen=True)
class RuntimeSettings:
    """Timings and limits of the job queue, the workers and the load balancers."""

    # How long job-take and job-stop long-polls are held before answering 204.
    long_poll_s: float = 30.0
    # RUNPOD_PING_INTERVAL given to workers. A worker holding jobs that is not heard from for
    # ``lease_pings`` intervals loses them: they go back to the queue.
    ping_interval_ms: int = 2000
    lease_pings: int = 3
    # Period of the autoscaler / lease reaper.
    tick_s: float = 0.5
    # How long a load-balanced request waits for a ready worker (e.g. a cold start from zero).
    lb_ready_wait_s: float = 60.0
    # On platform shutdown, how long workers get to finish in-flight work after SIGTERM.
    shutdown_grace_s: float = 10.0
    # How long a worker told to drain (scale-down, rolling update) gets before SIGKILL.
    drain_grace_s: float = 300.0
    # Retention of finished jobs: /run results (Runpod: 30 min) and results already handed to
    # a /runsync caller (Runpod: 1 min).
    result_ttl_s: float = 1800.0
    sync_result_ttl_s: float = 60.0
    # Default time a job may wait in the queue before it is dropped (Runpod policy "ttl": 24 h).
    queue_ttl_s: float = 86400.0
    # Cap of the restart backoff of a crashing worker.
    backoff_max_s: float = 30.0
    # A job whose worker dies while running it is queued again this many times at most, then
    # FAILED: a job that kills its worker cannot keep the queue behind it waiting forever.
    max_attempts: int = 3
    # A worker log is copied to ``.1`` and truncated when it grows past this.
    log_max_bytes: int = 10 * 1024 * 1024
    # Where workers run (backends.py): "process" (a process in its image's environment) or
    # "docker" (a container of its image).
    workers: Literal["process", "docker"] = "process"
    # The process backend's Python: "image" (an environment per image, imageenvs.py) or
    # "platform" (the platform's own; its own test suite uses it: fast, measured by coverage).
    worker_env: Literal["image", "platform"] = "image"

    @property
    def lease_timeout_s(self) -> float:
        return self.lease_pings * self.ping_interval_ms / 1000

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RuntimeSettings:
        """Read the ``FLASH_PLATFORM_*`` overrides (see README, Local platform)."""
        env = os.environ if env is None else env
        d = cls()
        workers = env.get("FLASH_PLATFORM_WORKERS", d.workers).strip() or d.workers
        if workers not in ("process", "docker"):
            raise FlashError(f"FLASH_PLATFORM_WORKERS must be process or docker, not {workers!r}")
        worker_env = env.get("FLASH_PLATFORM_WORKER_ENV", d.worker_env).strip() or d.worker_env
        if worker_env not in ("image", "platform"):
            raise FlashError(
                f"FLASH_PLATFORM_WORKER_ENV must be image or platform, not {worker_env!r}"
            )
        return cls(
            workers=workers,  # type: ignore[arg-type]
            worker_env=worker_env,  # type: ignore[arg-type]
            long_poll_s=_number(env, "FLASH_PLATFORM_LONG_POLL_S", d.long_poll_s),
            # The runpod SDK pings every RUNPOD_PING_INTERVAL // 1000 seconds: below 1 s it
            # would never sleep.
            ping_interval_ms=max(
                1000, int(_number(env, "FLASH_PLATFORM_PING_INTERVAL_MS", d.ping_interval_ms))
            ),
            lease_pings=max(2, int(_number(env, "FLASH_PLATFORM_LEASE_PINGS", d.lease_pings))),
            tick_s=max(0.05, _number(env, "FLASH_PLATFORM_TICK_S", d.tick_s)),
            lb_ready_wait_s=_number(env, "FLASH_PLATFORM_LB_WAIT_S", d.lb_ready_wait_s),
            shutdown_grace_s=_number(env, "FLASH_PLATFORM_SHUTDOWN_GRACE_S", d.shutdown_grace_s),
            drain_grace_s=_number(env, "FLASH_PLATFORM_DRAIN_GRACE_S", d.drain_grace_s),
            result_ttl_s=_number(env, "FLASH_PLATFORM_RESULT_TTL_S", d.result_ttl_s),
            sync_result_ttl_s=_number(env, "FLASH_PLATFORM_SYNC_RESULT_TTL_S", d.sync_result_ttl_s),
            queue_ttl_s=_number(env, "FLASH_PLATFORM_QUEUE_TTL_S", d.queue_ttl_s),
            backoff_max_s=_number(env, "FLASH_PLATFORM_BACKOFF_MAX_S", d.backoff_max_s),
            max_attempts=max(1, int(_number(env, "FLASH_PLATFORM_JOB_MAX_ATTEMPTS", 3))),
            log_max_bytes=int(
                _number(env, "FLASH_PLATFORM_LOG_MAX_MB", d.log_max_bytes / 2**20) * 2**20
            ),
        )
