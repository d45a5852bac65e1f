"""What the worker images already hold, and the platform the packer installs dependencies for.

Two Dockerfiles at the repository root build every worker image: ``Dockerfile.gpu`` (CUDA base;
tagged ``runpod/flash`` for queue-based and ``runpod/flash-lb`` for load-balanced workers) and
``Dockerfile.cpu`` (slim Python; ``runpod/flash-cpu`` and ``runpod/flash-lb-cpu``). The
load-balanced and queue-based images are the same build: the bootstrap picks the server from the
manifest. Each image installs flash_runtime, and with it every dependency flash_runtime declares,
plus the packages listed in ``images/<kind>.txt``.

A package the image already has must not be shipped again in the artifact, so the packer leaves
out (see :func:`image_provided`):

* the SDK itself (``flash-runtime``, and ``runpod-flash``, the name apps written for the reference
  implementation list in their requirements) and flash_runtime's *declared* dependencies. Their
  own transitive dependencies are not left out: they are an implementation detail of those
  packages that changes from version to version (a newer ``runpod`` may stop pulling ``requests``),
  so an app that asks for one gets it bundled and keeps working whatever the image resolves to;
* the packages in :data:`IMAGE_PACKAGES` for the kinds of image the app's resources run on.
  One artifact serves every resource of the app, so only what *every* image involved preinstalls
  is left out (the intersection): a GPU-only app does not ship ``triton``, an app with CPU
  workers too does, because the CPU image has no ``triton``.

:data:`IMAGE_PACKAGES` is the packer's copy of ``images/*.txt``; ``tests/test_images.py`` parses
the Dockerfiles and those lists and fails when they disagree.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from pathlib import Path

# Packages each image preinstalls on top of flash_runtime (normalised names; see images/*.txt).
IMAGE_PACKAGES: dict[str, frozenset[str]] = {
    "gpu": frozenset({"torch", "torchvision", "torchaudio", "triton", "numpy"}),
    "cpu": frozenset({"torch", "torchvision", "torchaudio", "numpy"}),
}

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

_NAME_RE = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)(?=\s|[\[(<>=!~;@]|$)")


_EXTRA_MARKER = re.compile(r";.*\bextra\s*==")


def normalize(name: str) -> str:
    """PEP 503 normalised distribution name: ``Charset_Normalizer`` -> ``charset-normalizer``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str | None:
    """The normalised distribution name of a requirement line, or None (URL, path, option)."""
    match = _NAME_RE.match(requirement)
    return normalize(match.group(1)) if match else None


@functools.cache
def runtime_dependencies() -> frozenset[str]:
    """Names of the distributions flash_runtime declares as dependencies (extras left out)."""
    from importlib import metadata

    try:
        requires = metadata.requires("flash-runtime") or []
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        requires = _pyproject_dependencies()
    names = set()
    for line in requires:
        if _EXTRA_MARKER.search(line):
            continue
        name = requirement_name(line)
        if name:
            names.add(name)
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


def image_provided(kinds: Iterable[str]) -> dict[str, str]:
    """Every distribution the worker images of ``kinds`` ("gpu"/"cpu") already hold.

    Maps the normalised name to why it is there, for the build's report.
    """
    provided: dict[str, str] = {}
    kinds = sorted(set(kinds))
    if kinds:
        common = frozenset.intersection(*(IMAGE_PACKAGES[k] for k in kinds))
        label = "/".join(k.upper() for k in kinds)
        for name in sorted(common):
            provided[name] = f"preinstalled in the {label} worker image"
    for name in sorted(runtime_dependencies()):
        provided[name] = "a dependency of flash_runtime, in every worker image"
    for name in sorted(SDK_DISTRIBUTIONS):
        provided[name] = "the Flash SDK, in every worker image"
    return provided


def default_image(*, gpu: bool, load_balanced: bool, python_version: str) -> str:
    """The worker image a resource runs on when its Endpoint gives no ``image``."""
    repo = {
        (True, False): "runpod/flash",
        (False, False): "runpod/flash-cpu",
        (True, True): "runpod/flash-lb",
        (False, True): "runpod/flash-lb-cpu",
    }[(gpu, load_balanced)]
    return f"{repo}:py{python_version}-latest"


def resource_type(*, gpu: bool, load_balanced: bool) -> str:
    """The manifest's ``resource_type``, spelled as runpod-flash 1.21 spells deployed resources."""
    return {
        (True, False): "ServerlessEndpoint",
        (False, False): "CpuServerlessEndpoint",
        (True, True): "LoadBalancerSlsResource",
        (False, True): "CpuLoadBalancerSlsResource",
    }[(gpu, load_balanced)]
