"""The ``docker`` worker backend: each worker is a container of its endpoint's image.

A worker is ``docker run`` of the template's ``imageName`` with the artifact mounted read-only at
``/root/.runpod/artifact.tar.gz`` (where Runpod puts it), the variables a Runpod worker gets
(passed by name, so no value shows in a process list), ``--network host`` (its own ``PORT`` for a
load-balanced worker; traffic stays on loopback), the endpoint's network volume at
``/runpod-volume`` and its GPUs (``--gpus device=...``). The ``docker run`` client is the process
the supervisor watches: its output is the container's log, SIGTERM reaches the container
(``--sig-proxy``), and a kill also kills the container. Containers carry a label naming this
platform, so those a killed platform left behind are removed when it starts again.

``system_dependencies`` are installed at the first start with apt, into an image derived from
the endpoint's (``flash-sysdeps:<digest of image and packages>``), which later workers reuse,
as Runpod's images install them at start.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from ..errors import FlashError
from ..pack.images import SUPPORTED_PYTHON
from ..protocol.local import PlatformConfig
from . import imageenvs
from .backends import VOLUME_MOUNT, VOLUME_PATH_ENV, BackendName, Launch, cuda_devices
from .gpus import Gpu
from .model import EndpointSpec
from .settings import RuntimeSettings

ARTIFACT_MOUNT = "/root/.runpod/artifact.tar.gz"
APP_DIR = "/app"
SYSDEPS_REPOSITORY = "flash-sysdeps"


def docker_binary() -> str:
    found = shutil.which("docker")
    if found is None:
        raise FlashError(
            "the docker worker backend needs Docker: install it (apt-get install docker.io) "
            "and start its engine, or start the platform with `--workers process`"
        )
    return found


def _run(args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


class DockerBackend:
    name: BackendName = "docker"
    python_versions = frozenset(SUPPORTED_PYTHON)  # whatever the images hold

    def __init__(self, config: PlatformConfig, settings: RuntimeSettings) -> None:
        self.config = config
        self.settings = settings
        self.docker = docker_binary()
        info = _run([self.docker, "info", "--format", "{{.ServerVersion}}"])
        if info.returncode != 0:
            raise FlashError(
                f"the Docker engine does not answer ({info.stderr.strip()[-300:]}): start it "
                "(dockerd), or start the platform with `--workers process`"
            )
        digest = hashlib.sha256(str(config.root.resolve()).encode()).hexdigest()[:12]
        self.label = f"flash.platform={digest}"
        self._images: dict[str, str] = {}  # endpoint id -> the image its workers run
        self.remove_leftovers()

    # -- images -------------------------------------------------------------------------------

    def _exists(self, image: str) -> bool:
        return _run([self.docker, "image", "inspect", image]).returncode == 0

    @staticmethod
    def build_hint(image: str) -> str:
        """The command that makes ``image`` on this machine."""
        kind = imageenvs.image_kind(image)
        python = image.rpartition(":py")[2].split("-")[0] or "3.12"
        if kind.startswith("flash"):
            dockerfile = "Dockerfile.cpu" if kind.endswith("cpu") else "Dockerfile.gpu"
            return (
                f"docker build -f {dockerfile} --build-arg PYTHON_VERSION={python} "
                f"-t {image} .   (in a flash_runtime checkout)"
            )
        if kind.startswith("sdk"):  # our image is also a Runpod SDK 2.0 runtime
            dockerfile = "Dockerfile.cpu" if kind.endswith("cpu") else "Dockerfile.gpu"
            return (
                f"docker build -f {dockerfile} --build-arg PYTHON_VERSION={python} "
                f"-t {image} .   (in a flash_runtime checkout: our bootstrap boots 2.0 artifacts)"
            )
        if kind.startswith("official"):
            return (
                f"docker pull {image}   (or, offline, an emulation of it: docker build -f "
                f"flash_runtime/platform/official_image/Dockerfile -t {image} .)"
            )
        return f"docker pull {image}   (or build it from its Dockerfile)"

    def _sysdeps_tag(self, image: str, packages: tuple[str, ...]) -> str:
        image_id = _run([self.docker, "image", "inspect", "-f", "{{.Id}}", image]).stdout.strip()
        key = hashlib.sha256(json.dumps([image_id, sorted(packages)]).encode()).hexdigest()[:16]
        return f"{SYSDEPS_REPOSITORY}:{key}"

    def _with_packages(
        self, image: str, packages: tuple[str, ...], progress: Callable[[str], None]
    ) -> tuple[str, float | None]:
        """``image`` with the apt ``packages`` installed: made once, then reused; with the
        seconds it took when it was made now."""
        tag = self._sysdeps_tag(image, packages)
        if self._exists(tag):
            return tag, None
        import time

        started = time.perf_counter()
        progress(f"installing {' '.join(packages)} into {image} with apt (once)")
        config = json.loads(
            _run([self.docker, "image", "inspect", "-f", "{{json .Config}}", image]).stdout or "{}"
        )
        builder = f"flash-sysdeps-{tag.rpartition(':')[2]}-{os.getpid()}"
        script = (
            "set -e; export DEBIAN_FRONTEND=noninteractive; apt-get update -qq; "
            f"apt-get install -y -qq --no-install-recommends {' '.join(packages)} >/dev/null; "
            "rm -rf /var/lib/apt/lists/*"
        )
        # The image's own entrypoint stays when it has none (an emptied ENTRYPOINT would not
        # survive the commit); one it has is replaced for the install and restored after.
        entrypoint = config.get("Entrypoint") or []
        run = [self.docker, "run", "--name", builder, "--network", "host", "--user", "root"]
        run += (
            ["--entrypoint", "sh", image, "-c", script]
            if entrypoint
            else [image, "sh", "-c", script]
        )
        done = _run(run, timeout=1800)
        try:
            if done.returncode != 0:
                raise FlashError(
                    f"system_dependencies {' '.join(packages)} could not be installed into "
                    f"{image} with apt: {(done.stderr or done.stdout).strip()[-600:]}"
                )
            changes = ["--change", f"CMD {json.dumps(config.get('Cmd') or [])}"]
            if entrypoint:
                changes += ["--change", f"ENTRYPOINT {json.dumps(entrypoint)}"]
            committed = _run([self.docker, "commit", *changes, builder, tag], timeout=600)
            if committed.returncode != 0:
                raise FlashError(f"could not save {tag}: {committed.stderr.strip()[-300:]}")
        finally:
            _run([self.docker, "rm", "-f", builder])
        return tag, round(time.perf_counter() - started, 1)

    def _image_for(self, spec: EndpointSpec) -> str:
        """The image a worker of ``spec`` runs (after ``prepare``, or after a restart)."""
        known = self._images.get(spec.id)
        if known is not None:
            return known
        if spec.system_dependencies:
            tag = self._sysdeps_tag(spec.image, spec.system_dependencies)
            if self._exists(tag):
                return tag
        return spec.image

    def prepare(self, spec: EndpointSpec, progress: Callable[[str], None]) -> list[str]:
        if not spec.image:
            raise FlashError(f"endpoint {spec.name!r} has no image (the template's imageName)")
        if not self._exists(spec.image):
            raise FlashError(
                f"image {spec.image} of endpoint {spec.name!r} is not on this machine; make it "
                f"with: {self.build_hint(spec.image)}"
            )
        notices = []
        image = spec.image
        if spec.system_dependencies:
            image, seconds = self._with_packages(spec.image, spec.system_dependencies, progress)
            if seconds is not None:
                notices.append(
                    f"installed system_dependencies {', '.join(spec.system_dependencies)} into "
                    f"{image} in {seconds:.1f}s (once per image and package list)"
                )
        self._images[spec.id] = image
        return notices

    # -- workers ------------------------------------------------------------------------------

    def launch(
        self, spec: EndpointSpec, worker_id: str, env: dict[str, str], gpus: list[Gpu]
    ) -> Launch:
        name = f"flash-{worker_id}"
        env.update(FLASH_BUILD_ARTIFACT_PATH=ARTIFACT_MOUNT, FLASH_APP_DIR=APP_DIR)
        args = [
            self.docker, "run", "--rm", "--name", name, "--label", self.label,
            "--network", "host", "--sig-proxy=true",
            "-v", f"{Path(spec.artifact_path).resolve()}:{ARTIFACT_MOUNT}:ro",
        ]  # fmt: skip
        if spec.volume_dir:
            Path(spec.volume_dir).mkdir(parents=True, exist_ok=True)
            args += ["-v", f"{spec.volume_dir}:{VOLUME_MOUNT}"]
            env[VOLUME_PATH_ENV] = VOLUME_MOUNT
        if spec.gpu_count and gpus:
            args += ["--gpus", f'"device={cuda_devices(gpus)}"']
        for key in sorted(env):
            args += ["-e", key]  # the value comes from the client's environment
        args.append(self._image_for(spec))
        client_env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "DOCKER_HOST")}
        client_env.update(env)
        self.config.apps_dir.mkdir(parents=True, exist_ok=True)
        return Launch(args, self.config.apps_dir, client_env, container=name)

    def kill(self, launch: Launch) -> None:
        if launch.container:
            subprocess.Popen(
                [self.docker, "kill", launch.container],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

    def exit_code(self, code: int) -> int:
        """``docker run`` exits 128+N for a container ended by signal N: as a process would."""
        return -(code - 128) if code in (137, 143) else code

    def remove_leftovers(self) -> None:
        """Containers of this platform that outlived it (it was killed) are removed."""
        listed = _run([self.docker, "ps", "-aq", "--filter", f"label={self.label}"])
        ids = listed.stdout.split()
        if ids:
            _run([self.docker, "rm", "-f", *ids])

    def close(self) -> None:
        self.remove_leftovers()
