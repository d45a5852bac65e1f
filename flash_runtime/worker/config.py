"""The worker's environment, read once at start-up (contract: docs/CONTRACTS.md, Worker environment)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..envvars import flag, number


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    return int(number(env, key, default, integer=True, minimum=None))


@dataclass(frozen=True)
class WorkerConfig:
    """Everything the bootstrap and the servers read from the environment."""

    artifact_path: Path = Path("/root/.runpod/artifact.tar.gz")
    app_dir: Path = Path("/app")
    disable_unpack: bool = False
    resource_name: str | None = None
    endpoint_type: str | None = None  # "lb" | "qb" | None (from the manifest)
    endpoint_id: str | None = None
    pod_id: str | None = None
    host: str = "0.0.0.0"
    port: int = 80
    port_health: int | None = None
    queue_loop: str = "flash"  # "flash" (ours) | "runpod" (runpod.serverless.start)
    log_level: str = "INFO"
    webhook_get_job: str | None = None
    webhook_post_output: str | None = None
    webhook_post_stream: str | None = None
    webhook_ping: str | None = None
    ai_api_key: str | None = None
    ping_interval_ms: int = 10_000
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WorkerConfig:
        env = dict(os.environ if env is None else env)
        endpoint_type = (env.get("FLASH_ENDPOINT_TYPE") or "").strip().lower() or None
        if endpoint_type not in (None, "lb", "qb"):
            from ..errors import FlashError

            raise FlashError(
                f"FLASH_ENDPOINT_TYPE={endpoint_type!r} must be 'lb' or 'qb' (or unset to "
                "take it from the manifest)"
            )
        return cls(
            artifact_path=Path(env.get("FLASH_BUILD_ARTIFACT_PATH") or cls.artifact_path),
            app_dir=Path(env.get("FLASH_APP_DIR") or cls.app_dir),
            disable_unpack=flag(env.get("FLASH_DISABLE_UNPACK")),
            resource_name=env.get("FLASH_RESOURCE_NAME") or None,
            endpoint_type=endpoint_type,
            endpoint_id=env.get("RUNPOD_ENDPOINT_ID") or None,
            pod_id=env.get("RUNPOD_POD_ID") or None,
            host=env.get("FLASH_HOST") or cls.host,
            port=_int(env, "PORT", cls.port),
            port_health=_int(env, "PORT_HEALTH", 0) or None,
            queue_loop=(env.get("FLASH_QUEUE_LOOP") or "flash").strip().lower(),
            log_level=(env.get("FLASH_LOG_LEVEL") or env.get("RUNPOD_LOG_LEVEL") or "INFO").upper(),
            webhook_get_job=env.get("RUNPOD_WEBHOOK_GET_JOB") or None,
            webhook_post_output=env.get("RUNPOD_WEBHOOK_POST_OUTPUT") or None,
            webhook_post_stream=env.get("RUNPOD_WEBHOOK_POST_STREAM") or None,
            webhook_ping=env.get("RUNPOD_WEBHOOK_PING") or None,
            ai_api_key=env.get("RUNPOD_AI_API_KEY") or None,
            ping_interval_ms=_int(env, "RUNPOD_PING_INTERVAL", cls.ping_interval_ms),
            env=env,
        )
