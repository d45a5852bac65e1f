"""The worker images and the packer agree on what the images preinstall.

There is no Docker engine here, so the Dockerfiles are parsed: every ``pip install`` they run
must install either a list from ``images/`` (whose names must equal the packer's
``IMAGE_PACKAGES``) or flash_runtime's own source (whose declared dependencies the packer reads
from the installed metadata, which must equal pyproject.toml's).
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

ROOT = Path(__file__).resolve().parent.parent


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


@pytest.mark.parametrize("kind", ["gpu", "cpu"])
def test_dockerfile_installs_what_the_packer_leaves_out(kind: str) -> None:
    dockerfile = parse(ROOT / f"Dockerfile.{kind}")
    installs = pip_installs(dockerfile)
    assert installs, "the Dockerfile installs nothing with pip"
    lists: set[str] = set()
    sources: set[str] = set()
    for args in installs:
        i = 0
        while i < len(args):
            arg = args[i]
            if arg in ("-r", "--requirement"):
                [repo_file] = source_of(dockerfile, args[i + 1])
                lists.add(repo_file)
                i += 2
                continue
            if arg.startswith("-"):
                i += 1
                continue
            # A positional argument: only flash_runtime's source tree may be installed so.
            copied = source_of(dockerfile, arg.rstrip("/") + "/")
            assert "pyproject.toml" in copied, f"pip installs {arg!r}, which is not a list"
            assert (ROOT / "pyproject.toml").is_file()
            sources.add(arg)
            i += 1
    assert lists == {f"images/{kind}.txt"}
    assert len(sources) == 1, "flash_runtime must be installed from its source, once"
    src = sources.pop().rstrip("/")
    assert source_of(dockerfile, f"{src}/flash_runtime") == ["flash_runtime"]
    assert source_of(dockerfile, f"{src}/runpod_flash") == ["runpod_flash"]

    assert names_in(ROOT / f"images/{kind}.txt") == images.IMAGE_PACKAGES[kind]


def test_packer_knows_flash_runtimes_declared_dependencies() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = {images.requirement_name(d) for d in pyproject["project"]["dependencies"]}
    assert images.runtime_dependencies() == declared
    provided = images.image_provided({"gpu", "cpu"})
    assert declared <= set(provided) and {"flash-runtime", "runpod-flash"} <= set(provided)
    # One artifact serves every resource: only what every image involved has is left out.
    assert "triton" in images.image_provided({"gpu"})
    assert "triton" not in provided and "torch" in provided


@pytest.mark.parametrize("kind", ["gpu", "cpu"])
def test_dockerfile_python_versions_entry_and_port(kind: str) -> None:
    dockerfile = parse(ROOT / f"Dockerfile.{kind}")
    assert dockerfile.args["PYTHON_VERSION"] == "3.12"
    text = (ROOT / f"Dockerfile.{kind}").read_text()
    allowed = re.search(r'case "\$PYTHON_VERSION" in ([\d.|]+)\)', text)
    assert allowed and tuple(allowed.group(1).split("|")) == images.SUPPORTED_PYTHON
    if kind == "cpu":
        assert dockerfile.froms == ["python:${PYTHON_VERSION}-slim"]
    else:
        assert dockerfile.args["CUDA_IMAGE"].startswith("nvidia/cuda:")
        assert dockerfile.froms[-1] == "${CUDA_IMAGE}"
        assert any('uv python install "$PYTHON_VERSION"' in run for run in dockerfile.runs)
    assert dockerfile.cmd == ["python", "-m", "flash_runtime.bootstrap"]
    assert dockerfile.expose == ["80"] and dockerfile.env["PORT"] == "80"
    assert dockerfile.env["FLASH_APP_DIR"] == "/app"


def test_default_image_names_are_the_ones_the_dockerfiles_document() -> None:
    gpu_doc = (ROOT / "Dockerfile.gpu").read_text()
    cpu_doc = (ROOT / "Dockerfile.cpu").read_text()
    for gpu, lb, doc in [
        (True, False, gpu_doc),
        (True, True, gpu_doc),
        (False, False, cpu_doc),
        (False, True, cpu_doc),
    ]:
        image = images.default_image(gpu=gpu, load_balanced=lb, python_version="3.12")
        repo = image.split(":")[0]
        assert f"{repo}:py$PYTHON_VERSION-latest" in doc
