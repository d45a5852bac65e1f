"""What both official entries do first: find the artifact, extract it, load the entry file."""

from __future__ import annotations

import importlib.util
import os
import sys
import tarfile
from pathlib import Path
from types import ModuleType

APP_DIR = Path(__file__).resolve().parent  # /app in the images


def deployed() -> bool:
    on_runpod = bool(os.environ.get("RUNPOD_ENDPOINT_ID") or os.environ.get("RUNPOD_POD_ID"))
    return on_runpod and bool(os.environ.get("FLASH_RESOURCE_NAME"))


def extract() -> None:
    artifact = Path(os.environ.get("FLASH_BUILD_ARTIFACT_PATH", "/root/.runpod/artifact.tar.gz"))
    if not artifact.is_file():
        raise FileNotFoundError(f"no build artifact at {artifact}")
    with tarfile.open(artifact, mode="r:*") as tar:
        for member in tar.getmembers():
            if not (APP_DIR / member.name).resolve().is_relative_to(APP_DIR):
                raise ValueError(f"unsafe member {member.name}")
        tar.extractall(APP_DIR, filter="fully_trusted")
    if str(APP_DIR) not in sys.path:
        sys.path.insert(0, str(APP_DIR))


def load_entry(module_name: str) -> ModuleType:
    resource = os.environ["FLASH_RESOURCE_NAME"]
    path = APP_DIR / f"handler_{resource}.py"
    if not path.resolve().is_relative_to(APP_DIR) or not path.is_file():
        raise RuntimeError(f"{path} not found: the build artifact is incomplete")
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
