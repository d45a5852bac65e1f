"""Real worker processes: ``python -m flash_runtime.bootstrap`` on a built artifact, with the
environment a Runpod worker gets."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


def build_app(source: Path, dest: Path) -> Path:
    """Copy the project at ``source`` into ``dest`` and build it (no dependencies).

    Returns the artifact path.
    """
    from ..pack import build

    project = dest / source.name
    if not project.exists():
        shutil.copytree(source, project, ignore=shutil.ignore_patterns(".flash", "__pycache__"))
    result = build(project, skip_deps=True)
    return result.artifact


@dataclass
class WorkerProcess:
    """A real ``python -m flash_runtime.bootstrap`` process."""

    proc: subprocess.Popen[bytes]
    log_path: Path
    port: int | None = None
    started: float = field(default_factory=time.perf_counter)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_exit(self, timeout: float = 10) -> int:
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 10) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def start_worker(
    artifact: Path,
    app_dir: Path,
    resource: str | None,
    *,
    port: int | None = None,
    extra_env: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
) -> WorkerProcess:
    """Start the bootstrap on ``artifact`` with the environment a Runpod worker gets.

    The worker's output goes to a file in ``log_dir`` (default: beside ``app_dir``).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASH_", "RUNPOD_"))}
    env.update(
        FLASH_BUILD_ARTIFACT_PATH=str(artifact),
        FLASH_APP_DIR=str(app_dir),
        FLASH_HOME=os.environ["FLASH_HOME"],
        PYTHONUNBUFFERED="1",
    )
    if resource:
        env["FLASH_RESOURCE_NAME"] = resource
    if port is not None:
        env["PORT"] = str(port)
        env["FLASH_HOST"] = "127.0.0.1"
    env.update(extra_env or {})
    log_path = (
        log_dir or app_dir.parent
    ) / f"worker-{resource or 'default'}-{time.monotonic_ns()}.log"
    log_file = open(log_path, "wb")  # noqa: SIM115 - the child owns it for its lifetime
    proc = subprocess.Popen(
        [sys.executable, "-m", "flash_runtime.bootstrap"],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    log_file.close()
    return WorkerProcess(proc, log_path, port)
