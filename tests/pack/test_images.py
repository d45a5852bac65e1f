"""The worker images and the packer agree on what the images preinstall.

The Dockerfiles are parsed here (``scripts/test-images`` builds and runs them for real, in
``tests/containers/``): they install ``IMAGE_PACKAGES`` (``images/<kind>.txt``, whose names and
versions must equal the packer's ``FLASH_IMAGE_PACKAGES``) and flash_runtime's own source without
extras (whose declared dependencies the packer reads from the installed metadata, which must
equal pyproject.toml's).
"""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from flash_runtime.pack import images

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Dockerfile:
    args: dict[str, str] = field(default_factory=dict)  # ARG defaults
    froms: list[str] = field(default_factory=list)
    copies: dict[str, list[str]] = field(default_factory=dict)  # destination -> sources
    runs: list[str] = field(default_factory=list)
    expose: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def parse(path: Path) -> Dockerfile:
    lines, pending = [], ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    out = Dockerfile()
    for line in lines:
        word, _, rest = line.partition(" ")
        word, rest = word.upper(), rest.strip()
        if word == "ARG":
            name, _, default = rest.partition("=")
            if default or name not in out.args:
                out.args[name] = default
        elif word == "FROM":
            out.froms.append(rest.split()[0])
        elif word == "COPY":
            parts = [p for p in shlex.split(rest) if not p.startswith("--")]
            out.copies[parts[-1]] = parts[:-1]
        elif word == "RUN":
            out.runs.append(rest)
        elif word == "EXPOSE":
            out.expose += rest.split()
        elif word in ("CMD", "ENTRYPOINT"):
            out.cmd = json.loads(rest)
        elif word == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", rest):
                out.env[key] = value
    return out


def pip_installs(dockerfile: Dockerfile) -> list[list[str]]:
    """The arguments of every ``pip install`` the Dockerfile runs."""
    found = []
    for run in dockerfile.runs:
        for command in re.split(r"&&|;|\|\|", run):
            if "pip install" not in command:
                continue
            words = shlex.split(command)
            for i in range(len(words) - 1):
                if words[i] == "pip" and words[i + 1] == "install":
                    found.append(words[i + 2 :])
    return found


def source_of(dockerfile: Dockerfile, image_path: str) -> list[str]:
    """The repository paths COPY put at ``image_path`` (a file, or a directory's contents)."""
    for dest, sources in dockerfile.copies.items():
        if dest.rstrip("/") == image_path.rstrip("/"):
            return sources
    for dest, sources in dockerfile.copies.items():
        if dest.endswith("/") and image_path.startswith(dest):
            name = image_path.removeprefix(dest)
            return [s for s in sources if Path(s).name == name]
    raise AssertionError(f"nothing is copied to {image_path}")


def names_in(requirements: Path) -> set[str]:
    out = set()
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name = images.requirement_name(line)
            assert name, f"{requirements}: cannot read a package name from {line!r}"
            out.add(name)
    return out


def versions_in(requirements: Path) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for line in requirements.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            name = images.requirement_name(line)
            assert name, f"{requirements}: cannot read a package name from {line!r}"
            pin = line.split("==", 1)[1].split("+", 1)[0] if "==" in line else None
            out[name] = pin
    return out


@pytest.mark.parametrize("kind", ["gpu", "cpu"])
def test_dockerfile_installs_what_the_packer_leaves_out(kind: str) -> None:
    """The image installs IMAGE_PACKAGES (default: images/<kind>.txt, whose names and versions
    the packer copies) and flash_runtime's source without extras: its worker core."""
    dockerfile = parse(ROOT / f"Dockerfile.{kind}")
    assert dockerfile.args["IMAGE_PACKAGES"] == f"images/{kind}.txt"
    assert source_of(dockerfile, "/opt/flash/images/packages.txt") == ["${IMAGE_PACKAGES}"]
    installs = pip_installs(dockerfile)
    assert ["$@", "-r", "/opt/flash/images/packages.txt"] in installs
    # The worker core at the locked versions, then the project without extras (no CLI).
    assert ["$@", "-r", "/opt/flash/src/requirements/worker.lock"] in installs
    assert source_of(dockerfile, "/opt/flash/src/requirements/worker.lock") == [
        "requirements/worker.lock"
    ]
    assert ["$@", "--no-deps", "/opt/flash/src"] in installs
    assert source_of(dockerfile, "/opt/flash/src/flash_runtime") == ["flash_runtime"]
    assert source_of(dockerfile, "/opt/flash/src/runpod_flash") == ["runpod_flash"]
    assert versions_in(ROOT / f"images/{kind}.txt") == images.FLASH_IMAGE_PACKAGES[kind]


@pytest.mark.parametrize("kind", ["gpu", "cpu"])
def test_dockerfile_takes_a_base_image_and_a_wheelhouse(kind: str) -> None:
    dockerfile = parse(ROOT / f"Dockerfile.{kind}")
    assert dockerfile.froms == ["${BASE_IMAGE}"]
    assert dockerfile.args["WHEELHOUSE"] == ""
    assert source_of(dockerfile, "/opt/flash/wheelhouse") == ["${WHEELHOUSE:-images}"]
    # Every pip install takes the wheelhouse's --no-index --find-links when one is given.
    text = (ROOT / f"Dockerfile.{kind}").read_text()
    assert text.count('pip install "$@"') == 3
    assert text.count("set -- --no-index --find-links /opt/flash/wheelhouse") == 2  # per RUN


def test_packer_knows_flash_runtimes_declared_dependencies() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = {images.requirement_name(d) for d in pyproject["project"]["dependencies"]}
    assert images.runtime_dependencies() == declared
    ours = images.ImageTarget.choose("registry.example/me")
    provided = images.image_provided(ours, {"gpu", "cpu"})
    assert declared <= set(provided) and {"flash-runtime", "runpod-flash"} <= set(provided)
    # One artifact serves every resource: only what every image involved has is left out.
    assert "triton" in images.image_provided(ours, {"gpu"})
    assert "triton" not in provided and "torch" in provided
    # Runpod's official CPU images have neither numpy nor torch, nor flash_runtime's core.
    official = images.image_provided(images.ImageTarget.choose(""), {"cpu"})
    assert not {"numpy", "torch", "msgspec", "orjson"} & set(official)
    assert {"aiohttp", "fastapi", "pydantic", "runpod", "runpod-flash"} <= set(official)


@pytest.mark.parametrize(
    ("requirement", "left_out"),
    [("numpy", True), ("numpy>=2", True), ("numpy==2.2.6", True), ("numpy==1.26.4", False),
     ("numpy<2", False), ("torch==2.7.1", True), ("pandas", False)],
)  # fmt: skip
def test_a_pin_other_than_the_images_is_bundled(requirement: str, left_out: bool) -> None:
    provided = images.image_provided(images.ImageTarget.choose("registry.example/me"), {"cpu"})
    assert (images.satisfied_by_image(requirement, provided) is not None) is left_out


def test_unknown_image_versions_bundle_only_exact_pins() -> None:
    official = images.image_provided(images.ImageTarget.choose(""), {"cpu"})
    assert images.satisfied_by_image("pydantic>=2", official) is not None
    assert images.satisfied_by_image("pydantic==2.5.0", official) is None
    assert images.satisfied_by_image("runpod-flash==1.21.0", official) is not None  # the SDK


@pytest.mark.parametrize("kind", ["gpu", "cpu"])
def test_dockerfile_python_versions_entry_and_port(kind: str) -> None:
    dockerfile = parse(ROOT / f"Dockerfile.{kind}")
    assert dockerfile.args["PYTHON_VERSION"] == "3.12"
    text = (ROOT / f"Dockerfile.{kind}").read_text()
    allowed = re.search(r'case "\$PYTHON_VERSION" in ([\d.|]+)\)', text)
    assert allowed and tuple(allowed.group(1).split("|")) == images.SUPPORTED_PYTHON
    if kind == "cpu":
        assert dockerfile.args["BASE_IMAGE"] == "python:${PYTHON_VERSION}-slim"
    else:
        assert dockerfile.args["BASE_IMAGE"].startswith("nvidia/cuda:12.8")
        assert any('uv python install "$PYTHON_VERSION"' in run for run in dockerfile.runs)
    assert dockerfile.cmd == ["python", "-m", "flash_runtime.bootstrap"]
    assert dockerfile.expose == ["80"] and dockerfile.env["PORT"] == "80"
    assert dockerfile.env["FLASH_APP_DIR"] == "/app"


def test_default_image_names_are_the_ones_the_dockerfiles_document() -> None:
    gpu_doc = (ROOT / "Dockerfile.gpu").read_text()
    cpu_doc = (ROOT / "Dockerfile.cpu").read_text()
    ours = images.ImageTarget.choose("registry.example/me")
    official = images.ImageTarget.choose("")
    for gpu, lb, doc in [
        (True, False, gpu_doc),
        (True, True, gpu_doc),
        (False, False, cpu_doc),
        (False, True, cpu_doc),
    ]:
        image = ours.image(gpu=gpu, load_balanced=lb, python_version="3.12")
        name = image.removeprefix("registry.example/me/").split(":")[0]
        assert f"<repository>/{name}:py$PYTHON_VERSION-latest" in doc
        assert official.image(gpu=gpu, load_balanced=lb, python_version="3.12") == (
            f"runpod/{name}:py3.12-latest"
        )


def locked(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].split(";", 1)[0].strip()
        if "==" in line:
            name, _, version = line.partition("==")
            out[images.normalize(name.strip())] = version.strip()
    return out


def test_the_locks_cover_pyprojects_dependencies() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    project = pyproject["project"]
    core = {images.requirement_name(d) for d in project["dependencies"]}
    worker = locked(ROOT / "requirements" / "worker.lock")
    assert core <= set(worker), f"requirements/worker.lock lacks {core - set(worker)}"
    extras = project["optional-dependencies"]
    wanted = core | {
        images.requirement_name(d)
        for extra in ("cli", "runpod", "dev")
        for d in extras[extra]
        if not d.startswith("flash-runtime")
    }
    dev = locked(ROOT / "requirements" / "dev.lock")
    assert wanted <= set(dev), f"requirements/dev.lock lacks {wanted - set(dev)}"
    # The two agree on every package they share.
    assert {n: v for n, v in worker.items() if n in dev} == {n: dev[n] for n in worker if n in dev}
