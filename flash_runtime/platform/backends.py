"""Where a worker runs: the ``process`` backend (a process in its image's environment, this
module) or the ``docker`` backend (a container of its image, ``docker.py``). The supervisor
starts, signals and watches both the same way: each launch is one child process (the worker,
or the ``docker run`` client attached to it).

``prepare`` runs when an endpoint is saved, off the event loop: it makes what the endpoint's
workers need (an image environment, an image with the system packages) and returns the notices
a deploy shows; a FlashError refuses the endpoint. ``launch`` is then cheap, per worker.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from ..errors import FlashError
from ..protocol.local import PlatformConfig
from ..worker.sysdeps import missing_system_packages
from . import imageenvs, official
from .gpus import Gpu
from .model import EndpointSpec
from .settings import RuntimeSettings

WORKER_COMMAND = (sys.executable, "-m", "flash_runtime.bootstrap")
# Where Runpod mounts an endpoint's network volume in its workers.
VOLUME_MOUNT = "/runpod-volume"
VOLUME_PATH_ENV = "RUNPOD_VOLUME_PATH"
ENDPOINT_VOLUME = "/runpod-volume"  # where Runpod mounts an endpoint's network volume
BackendName = Literal["process", "docker"]


@dataclass
class Launch:
    """How to start one worker: its command, directory and environment."""

    command: list[str]
    cwd: Path
    env: dict[str, str]
    scratch: Path | None = None  # a per-worker directory, removed when the worker exits
    container: str | None = None  # docker: the container's name


class Backend(Protocol):
    name: BackendName
    # The Python versions ("3.11") whose artifacts this backend can run workers for.
    python_versions: frozenset[str]

    def prepare(self, spec: EndpointSpec, progress: Callable[[str], None]) -> list[str]: ...

    def launch(
        self, spec: EndpointSpec, worker_id: str, env: dict[str, str], gpus: list[Gpu]
    ) -> Launch: ...

    def kill(self, launch: Launch) -> None: ...

    def exit_code(self, code: int) -> int: ...

    def close(self) -> None: ...


def cuda_devices(gpus: list[Gpu]) -> str:
    return ",".join(str(g.index) for g in gpus)


class ProcessBackend:
    """Workers as processes of this machine, each in its image's environment
    (``imageenvs.py``); with ``worker_env="platform"``, in the platform's own environment
    instead (the platform's own test suite: fast, and measured by coverage)."""

    name: BackendName = "process"

    def __init__(
        self,
        config: PlatformConfig,
        settings: RuntimeSettings,
        command: Sequence[str] = WORKER_COMMAND,
    ) -> None:
        self.config = config
        self.settings = settings
        self.command = list(command)
        self.own_env = settings.worker_env == "platform"
        # Made or found by prepare (off the loop): launches, on the loop, only look them up.
        self._envs: dict[tuple[str, str], imageenvs.ImageEnv] = {}
        if self.own_env:
            self.python_versions = frozenset({f"{sys.version_info.major}.{sys.version_info.minor}"})
        else:
            self.python_versions = imageenvs.pythons()

    def _kind(self, spec: EndpointSpec) -> str:
        if spec.entry == "official":  # an artifact that only the official image's entry runs
            kind = imageenvs.image_kind(spec.image)
            return kind if kind.startswith("official") else "official-cpu"
        return imageenvs.image_kind(spec.image)

    def _python(self, spec: EndpointSpec) -> str:
        return spec.python_version or f"{sys.version_info.major}.{sys.version_info.minor}"

    def prepare(self, spec: EndpointSpec, progress: Callable[[str], None]) -> list[str]:
        notices = []
        missing = missing_system_packages(spec.system_dependencies)
        if missing:
            notices.append(
                f"system_dependencies {', '.join(missing)}: not installed on this machine, and "
                "the process backend cannot install them (workers run on this machine); "
                f"install them (apt-get install {' '.join(missing)}) or start the platform "
                "with `--workers docker`"
            )
        if self.own_env and spec.entry == "flash":
            return notices
        key = (self._kind(spec), self._python(spec))
        env = imageenvs.environment(self.config.images_dir, *key, progress=progress)
        self._envs[key] = env
        if env.created_s is not None:
            notices.append(
                f"made the {env.kind} image environment for Python {env.python} in "
                f"{env.created_s:.1f}s (once; later deploys reuse it)"
            )
        if env.missing:
            notices.append(
                f"the image's {', '.join(env.missing)} cannot be installed for local workers: "
                "importing one fails with a message saying so"
            )
        return notices

    def launch(
        self, spec: EndpointSpec, worker_id: str, env: dict[str, str], gpus: list[Gpu]
    ) -> Launch:
        if spec.gpu_count:
            env["CUDA_VISIBLE_DEVICES"] = cuda_devices(gpus)
        if spec.volume_dir:
            Path(spec.volume_dir).mkdir(parents=True, exist_ok=True)
            env[VOLUME_PATH_ENV] = spec.volume_dir
            if "RUNPOD_MOUNTS" in env:  # a Runpod SDK 2.0 app's: its volume is that directory
                env["RUNPOD_MOUNTS"] = rebind_mounts(env["RUNPOD_MOUNTS"], spec.volume_dir)
        self.config.apps_dir.mkdir(parents=True, exist_ok=True)
        if self.own_env and spec.entry == "flash":
            return Launch(list(self.command), self.config.apps_dir, env)
        key = (self._kind(spec), self._python(spec))
        image_env = self._envs.get(key)
        if image_env is None or not image_env.interpreter.exists():
            try:  # a restart: the endpoint was restored without being saved again
                image_env = imageenvs.environment(self.config.images_dir, *key, create=False)
            except FlashError as err:
                raise OSError(str(err)) from err
            self._envs[key] = image_env
        image_env.worker_env(env)
        if not image_env.official_entry:
            command = [str(image_env.interpreter), "-m", "flash_runtime.bootstrap"]
            return Launch(command, self.config.apps_dir, env)
        # The official image's entry: its own app directory (a container's /app).
        app_dir = self.config.apps_dir / f"official-{worker_id}"
        official.lay_out(app_dir)
        command = official.command(
            image_env.interpreter, spec.type, "127.0.0.1", _port(env), keyed=True
        )
        return Launch(command, app_dir, env, scratch=app_dir)

    def kill(self, launch: Launch) -> None:
        """Nothing beyond the process itself."""

    def exit_code(self, code: int) -> int:
        return code

    def close(self) -> None:
        """Nothing to clean up."""


def rebind_mounts(raw: str, volume_dir: str) -> str:
    """``RUNPOD_MOUNTS`` (the Runpod SDK 2.0's JSON list of ``{kind, reference, id, path}``)
    with the network volume's ``/runpod-volume`` moved to ``volume_dir``: a process worker has
    no mount, only the host directory. Anything unreadable is left for the worker to report."""
    try:
        bindings = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    if not isinstance(bindings, list):
        return raw
    for binding in bindings:
        if (
            isinstance(binding, dict)
            and binding.get("kind") == "network"
            and binding.get("path") == ENDPOINT_VOLUME
        ):
            binding["path"] = volume_dir
    return json.dumps(bindings)


def _port(env: dict[str, str]) -> int | None:
    return int(env["PORT"]) if "PORT" in env else None
