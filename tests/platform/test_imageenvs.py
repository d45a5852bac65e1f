"""Image environments (``platform/imageenvs.py``): which environment an image gets, what it
holds, and how a worker sees the image packages this machine cannot install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from flash_runtime.errors import FlashError
from flash_runtime.platform import imageenvs


@pytest.mark.parametrize(
    ("image", "kind"),
    [
        ("runpod/flash-cpu:py3.11-latest", "official-cpu"),
        ("runpod/flash-lb:py3.12-latest", "official-gpu"),
        ("me/flash-lb-cpu:py3.13-latest", "flash-cpu"),
        ("ghcr.io/me/flash:py3.11-latest", "flash-gpu"),
        ("me/my-own-image:1.0", "custom"),
    ],
)
def test_the_image_names_its_environment(image: str, kind: str) -> None:
    assert imageenvs.image_kind(image) == kind


def test_recipes_hold_the_image_package_sets() -> None:
    official = imageenvs.recipe("official-gpu")
    assert "runpod-flash==1.21.0" in official.install and "numpy" in official.install
    assert official.image_only == ("torch",) and not official.core
    ours = imageenvs.recipe("flash-cpu")
    assert "numpy==2.2.6" in ours.install and ours.core
    assert any(line.startswith("msgspec==") for line in ours.install)  # the worker core's
    assert set(ours.image_only) == {"torch", "torchvision", "torchaudio"}
    assert not any(line.startswith(("click", "rich", "graphql")) for line in ours.install)
    assert imageenvs.recipe("custom").image_only == ()


def test_a_python_without_an_interpreter_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FlashError, match=r"no Python 3\.9 interpreter on this machine"):
        imageenvs.environment(tmp_path, "flash-cpu", "3.9")


def test_image_only_packages_are_borrowed_or_explained(tmp_path: Path) -> None:
    """The finder an environment loads: a package the platform has (orjson stands in for a
    host's torch) is found in the platform's environment with what it needs; one it lacks
    raises ModuleNotFoundError saying why. A bare interpreter (-I -S: no site-packages) shows
    that nothing else of the platform's environment leaks in."""
    borrowed, missing = imageenvs._borrow(["orjson", "torch"], sys.executable)
    assert "orjson" in borrowed and "torch" in missing
    (tmp_path / "_flash_image.py").write_text(
        imageenvs._finder_source("flash-gpu", missing, borrowed)
    )
    probe = """
import sys
sys.path.insert(0, sys.argv[1])
import _flash_image
import orjson
print(orjson.dumps({"ok": 1}).decode())
try:
    import msgspec
except ModuleNotFoundError:
    print("msgspec: not there")
try:
    import torch
except ModuleNotFoundError as err:
    print(err)
"""
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = done.stdout.splitlines()
    assert lines[:2] == ['{"ok":1}', "msgspec: not there"], done.stderr
    assert "torch is preinstalled in the worker image" in lines[2]
