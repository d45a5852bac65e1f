"""The images workers run on, what each already holds, and the platform dependencies are for.

An endpoint runs on one of two families of image, the **image target** (recorded in the
manifest's ``image_target``):

* ``official``, the default: Runpod's published ``runpod/flash``, ``runpod/flash-cpu``,
  ``runpod/flash-lb`` and ``runpod/flash-lb-cpu`` images, unchanged. They run the reference
  worker, which loads ``/app/handler_<resource>.py`` from the artifact; ``flash build`` writes
  those files, and they hand the process over to flash_runtime, which the artifact carries in
  ``.flash-worker/`` (see :mod:`.core`). What these images preinstall is
  :data:`OFFICIAL_IMAGE_PACKAGES`.
* ``flash``: our own images, built from ``Dockerfile.cpu``/``Dockerfile.gpu`` and published by
  the user under a repository of their own (``FLASH_IMAGE_REPOSITORY`` or
  ``--image-repository``; the image names are ``<repository>/flash-cpu:py3.12-latest`` and so
  on). They hold flash_runtime's worker core (its declared dependencies) and
  ``images/<kind>.txt``, which :data:`FLASH_IMAGE_PACKAGES` copies; ``tests/pack/test_images.py``
  fails when the two disagree.

An endpoint with ``Endpoint(image=...)`` runs on an image of the user's whose contents the packer
cannot know: nothing is left out for it but the SDK, and the core is vendored.

A requirement the image already satisfies is not shipped again (see :func:`image_provided` and
:func:`satisfied_by_image`): one that names a package the image has, with no version or a version
range that admits the image's version, is left out; one pinned to a different version (or to
any exact version where the image's version is not known) is bundled, and the artifact's copy
wins. One artifact serves every resource of the app, so only what every image involved holds is
left out (the intersection): a GPU-only app does not ship ``triton`` on our images, an app with
CPU workers too does. The SDK itself (``flash-runtime``, and ``runpod-flash``, the name apps
written for the reference list) is never bundled as a dependency.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

# What Runpod's published images preinstall (runpod-workers/flash: pyproject.toml and the
# Dockerfiles), normalised name -> version, None where the image takes whatever is newest.
_OFFICIAL_COMMON: dict[str, str | None] = {
    "aiohttp": None,
    "cloudpickle": None,
    "pydantic": None,
    "requests": None,
    "runpod": None,
    "hf-transfer": None,
    "huggingface-hub": None,
    "fastapi": None,
    "uvicorn": None,
    "runpod-flash": None,
}
OFFICIAL_IMAGE_PACKAGES: dict[str, dict[str, str | None]] = {
    # The GPU images are runpod/pytorch with CUDA 12.8 and torch 2.9.1, plus numpy.
    "gpu": {**_OFFICIAL_COMMON, "torch": "2.9.1", "numpy": None},
    # The CPU images are python:X.Y-slim: no torch, no numpy.
    "cpu": dict(_OFFICIAL_COMMON),
}

# What our images preinstall on top of flash_runtime's worker core (images/<kind>.txt).
FLASH_IMAGE_PACKAGES: dict[str, dict[str, str | None]] = {
    "gpu": {
        "torch": "2.7.1",
        "torchvision": "0.22.1",
        "torchaudio": "2.7.1",
        "triton": "3.3.1",
        "numpy": "2.2.6",
    },
    "cpu": {"torch": "2.7.1", "torchvision": "0.22.1", "torchaudio": "2.7.1", "numpy": "2.2.6"},
}

OFFICIAL_REPOSITORY = "runpod"
REPOSITORY_ENV = "FLASH_IMAGE_REPOSITORY"

# Distribution names of the SDK: ours, and the reference implementation's (its apps list it).
SDK_DISTRIBUTIONS = frozenset({"flash-runtime", "runpod-flash"})

# Python versions there are worker images for (Dockerfile build argument PYTHON_VERSION).
SUPPORTED_PYTHON = ("3.11", "3.12", "3.13")

# Runpod workers are Linux x86_64. Wheels are picked for glibc 2.28 (manylinux_2_28 and older
# tags): both images have a newer glibc (Ubuntu 22.04: 2.35, Debian bookworm: 2.36), and so do
# the images users derive from them, while 2.28 still admits the wheels of nearly every package.
UV_PLATFORM = "x86_64-manylinux_2_28"
PIP_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
PLATFORM_LABEL = "linux x86_64 (manylinux_2_28)"


def normalize(name: str) -> str:
    """PEP 503 normalised distribution name: ``Charset_Normalizer`` -> ``charset-normalizer``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str | None:
    """The normalised distribution name of a requirement line, or None (URL, path, option)."""
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        return normalize(Requirement(requirement.strip()).name)
    except InvalidRequirement:
        return None


@functools.cache
def runtime_dependencies() -> frozenset[str]:
    """Names of the distributions flash_runtime declares as dependencies (extras left out)."""
    from importlib import metadata

    try:
        requires = metadata.requires("flash-runtime") or []
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        requires = _pyproject_dependencies()
    from packaging.requirements import Requirement

    names = set()
    for line in requires:
        requirement = Requirement(line)
        if requirement.marker is not None and "extra" in str(requirement.marker):
            continue  # an optional extra's, not installed with flash-runtime itself
        names.add(normalize(requirement.name))
    return frozenset(names)


def _pyproject_dependencies() -> list[str]:
    import tomllib

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return []
    deps = data.get("project", {}).get("dependencies", [])
    return [str(d) for d in deps]


@dataclass(frozen=True)
class Provided:
    """A package an image already holds: its version (None: unknown) and why it is there."""

    version: str | None
    why: str


@dataclass(frozen=True)
class ImageTarget:
    """Which family of image the endpoints run on (see the module's documentation)."""

    kind: str  # "official" | "flash"
    repository: str = OFFICIAL_REPOSITORY

    @classmethod
    def choose(cls, repository: str | None = None) -> ImageTarget:
        """Our images under ``repository`` (or ``FLASH_IMAGE_REPOSITORY``), else the official."""
        repo = repository if repository is not None else os.environ.get(REPOSITORY_ENV, "")
        repo = repo.strip().rstrip("/")
        if not repo:
            return cls("official")
        if not re.fullmatch(
            r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:[:/][a-z0-9]+(?:[._-][a-z0-9]+)*)*", repo
        ):
            from .errors import BuildError

            raise BuildError(
                f"image repository {repo!r} is not a valid registry path (lower-case letters, "
                "digits, '.', '-', '_', separated by '/'; e.g. ghcr.io/me or docker.io/me)"
            )
        return cls("flash", repo)

    @property
    def vendors_core(self) -> bool:
        """Whether the artifact must carry flash_runtime (the image does not have it)."""
        return self.kind == "official"

    def image(self, *, gpu: bool, load_balanced: bool, python_version: str) -> str:
        """The image a resource runs on when its Endpoint gives no ``image``."""
        name = {
            (True, False): "flash",
            (False, False): "flash-cpu",
            (True, True): "flash-lb",
            (False, True): "flash-lb-cpu",
        }[(gpu, load_balanced)]
        return f"{self.repository}/{name}:py{python_version}-latest"

    def packages(self, hardware: str) -> dict[str, Provided]:
        """What an image of this target for ``hardware`` ("gpu"/"cpu") holds."""
        if self.kind == "official":
            label = f"preinstalled in Runpod's {hardware.upper()} Flash image"
            return {n: Provided(v, label) for n, v in OFFICIAL_IMAGE_PACKAGES[hardware].items()}
        label = f"preinstalled in the flash_runtime {hardware.upper()} image"
        out = {n: Provided(v, label) for n, v in FLASH_IMAGE_PACKAGES[hardware].items()}
        for name in sorted(runtime_dependencies()):
            out[name] = Provided(
                None, "a dependency of flash_runtime, in every flash_runtime image"
            )
        return out


def image_provided(
    target: ImageTarget, hardware: Iterable[str], *, custom_image: bool = False
) -> dict[str, Provided]:
    """What every image the app's resources run on already holds (and the SDK, always).

    ``hardware``: the kinds ("gpu"/"cpu") of the resources on ``target``'s images;
    ``custom_image``: some resource runs on an image of the user's, which holds nothing known.
    """
    kinds = sorted(set(hardware))
    provided: dict[str, Provided] = {}
    if kinds and not custom_image:
        sets = [target.packages(k) for k in kinds]
        common = set(sets[0]).intersection(*sets[1:])
        for name in sorted(common):
            versions = {s[name].version for s in sets}
            version = versions.pop() if len(versions) == 1 else None
            whys = sorted({s[name].why for s in sets})
            provided[name] = Provided(version, whys[0] if len(whys) == 1 else "; ".join(whys))
    for name in sorted(SDK_DISTRIBUTIONS):
        provided[name] = Provided(None, "the Flash SDK: the artifact's runtime provides it")
    return provided


def satisfied_by_image(requirement: str, provided: Mapping[str, Provided]) -> str | None:
    """Why ``requirement`` need not be bundled, or None when it must be.

    A requirement the image's package satisfies is left out; an exact pin to another version,
    or one whose version the packer cannot compare, is bundled.
    """
    name = requirement_name(requirement)
    if name is None or name not in provided:
        return None
    have = provided[name]
    if name in SDK_DISTRIBUTIONS:
        return have.why
    try:
        from packaging.requirements import InvalidRequirement, Requirement
    except ImportError:  # pragma: no cover - packaging comes with the CLI install
        return have.why
    try:
        parsed = Requirement(requirement)
    except InvalidRequirement:
        return None
    if parsed.url:
        return None
    if not parsed.specifier:
        return have.why
    if have.version is None:
        exact = any(spec.operator in ("==", "===") for spec in parsed.specifier)
        return None if exact else have.why
    if parsed.specifier.contains(have.version, prereleases=True):
        return f"{have.why} ({name} {have.version})"
    return None


def image_version(requirement: str, provided: Mapping[str, Provided]) -> str | None:
    """The version of ``requirement``'s package in the image, when it has one and it is known."""
    name = requirement_name(requirement)
    have = provided.get(name or "")
    return have.version if have else None


def resource_type(*, gpu: bool, load_balanced: bool) -> str:
    """The manifest's ``resource_type``: the class names runpod-flash 1.21 writes for an
    ``@Endpoint`` resource, which are also the ones its provisioner rebuilds resources from
    (``ServerlessEndpoint`` and the like it would refuse)."""
    return {
        (True, False): "LiveServerless",
        (False, False): "CpuLiveServerless",
        (True, True): "LiveLoadBalancer",
        (False, True): "CpuLiveLoadBalancer",
    }[(gpu, load_balanced)]
