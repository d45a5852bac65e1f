"""Local workers run in their image's world (issue: workers in the image's world), ``process``
backend: ``flash deploy`` to a platform whose workers run in image environments (made once
under ``build/image-envs`` with uv), for both image targets: Runpod's official images (the
default) and ours (``--image-repository``).

A package the CLI's environment has but the app never lists fails the job with a hint; numpy,
listed, works; the GPU image's torch, which cannot be installed here, says so; the deploy names
the system package this machine lacks, and says the GPU endpoint runs on the CPU.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import APPS
from support import FlashCLI, request


def run_sync(cli: FlashCLI, key: str, endpoint_id: str, payload: dict[str, Any]) -> Any:
    status, body = request("POST", f"{cli.url}/v2/{endpoint_id}/runsync", key, {"input": payload})
    assert status == 200, body
    return body


def error_text(job: dict[str, Any]) -> str:
    assert job["status"] == "FAILED", job
    error = job["error"]
    info = json.loads(error) if isinstance(error, str) and error.startswith("{") else error
    return str(info["error_message"] if isinstance(info, dict) else info)


@pytest.fixture
def cli(tmp_path: Path) -> Any:
    platform = FlashCLI(tmp_path / "flash_home", tmp_path, FLASH_PLATFORM_WORKER_ENV="image")
    try:
        yield platform
    finally:
        platform.stop()


@pytest.mark.parametrize("target", ["official", "flash"])
def test_workers_see_only_their_image(cli: FlashCLI, tmp_path: Path, target: str) -> None:
    project = tmp_path / "world"
    shutil.copytree(APPS / "image_world", project)
    args = ["--image-repository", "registry.example/flash"] if target == "flash" else []
    started = time.perf_counter()
    result = json.loads(cli("deploy", "--json", *args, cwd=project, timeout=900))
    print(
        f"\n{target}: first deploy (image environments made) {time.perf_counter() - started:.1f}s"
    )
    endpoints = {ep["resource"]: ep for ep in result["endpoints"]}
    key = str(cli.status()["api_key"])

    notices = {name: " | ".join(ep["notices"]) for name, ep in endpoints.items()}
    print(json.dumps(notices, indent=1))
    assert "ffmpeg" in notices["undeclared"] and "--workers docker" in notices["undeclared"]
    if shutil.which("jq"):  # on this machine already: not reported
        assert "jq" not in notices["undeclared"].replace("apt-get install ffmpeg", "")
    assert "no NVIDIA GPU" in notices["tensors"] and "CPU" in notices["tensors"]
    assert "torch" in notices["tensors"]

    undeclared = error_text(run_sync(cli, key, endpoints["undeclared"]["id"], {}))
    assert "No module named 'graphql'" in undeclared and "dependencies" in undeclared, undeclared

    mean = run_sync(cli, key, endpoints["numbers"]["id"], {"values": [1, 2, 6]})
    assert mean["status"] == "COMPLETED" and mean["output"] == 3.0, mean

    torch = error_text(run_sync(cli, key, endpoints["tensors"]["id"], {}))
    assert "torch is preinstalled in the worker image" in torch, torch

    # Load-balanced too (on the official image, served by the image's uvicorn behind the
    # platform's keyed wrapper): the worker's interpreter is the image environment's.
    status, body = request("GET", f"{endpoints['where']['url']}/prefix", key)
    assert status == 200, body
    image_kind = "official-cpu" if target == "official" else "flash-cpu"
    assert f"/{image_kind}-py3." in body["prefix"], body

    # The second deploy reuses the environments: nothing is made again.
    again = json.loads(cli("deploy", "--json", "--env", "second", *args, cwd=project))
    assert not any("made the" in n for ep in again["endpoints"] for n in ep["notices"]), again
