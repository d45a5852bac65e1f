"""GPU assignment: a GPU endpoint's worker gets ``gpu_count`` of the host's GPUs, never one
another live worker holds; the device list is faked (``FLASH_PLATFORM_GPUS``), as the issue
asks, and checked for real where a GPU is lent (``scripts/gpu-check``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import runpod
from conftest import build_app
from support import endpoint_spec

from flash_runtime.errors import FlashError
from flash_runtime.platform.gpus import Gpu, GpuPool, detect, placement_notice, wanted_models
from flash_runtime.testing.net import wait_until
from flash_runtime.testing.platform import InProcessPlatform

FOUR = [Gpu(0, "NVIDIA L4"), Gpu(1, "NVIDIA A100 80GB PCIe"), Gpu(2, "NVIDIA A100-SXM4-80GB"),
        Gpu(3, "NVIDIA L4")]  # fmt: skip


def test_the_device_list_comes_from_the_setting() -> None:
    gpus = detect({"FLASH_PLATFORM_GPUS": "NVIDIA H200; NVIDIA L4"})
    assert gpus == [Gpu(0, "NVIDIA H200"), Gpu(1, "NVIDIA L4")]
    assert detect({"FLASH_PLATFORM_GPUS": "none"}) == []


def test_pools_expand_to_their_models() -> None:
    assert wanted_models("AMPERE_80") == {"NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-80GB"}
    assert wanted_models("HOPPER_141,NVIDIA L4") == {"NVIDIA H200", "NVIDIA L4"}
    assert wanted_models("any") is None and wanted_models("") is None


def test_workers_never_share_a_gpu() -> None:
    pool = GpuPool(FOUR)
    first = pool.acquire("w1", 1, "AMPERE_80")
    second = pool.acquire("w2", 1, "AMPERE_80")
    assert first is not None and second is not None
    assert {first[0].index, second[0].index} == {1, 2}  # the A100s, one each
    # No A100 is free: a third worker of the endpoint waits rather than share one.
    assert pool.acquire("w3", 1, "AMPERE_80") is None
    pool.release("w1")
    third = pool.acquire("w3", 1, "AMPERE_80")
    assert third is not None and third[0].index == first[0].index
    # Two at once, of any model: what is left.
    both = pool.acquire("w4", 2, "any")
    assert both is not None and {g.index for g in both} == {0, 3}
    assert pool.acquire("w5", 1, "any") is None
    assert pool.held_by("w4") == [0, 3]


def test_a_type_the_host_lacks_is_served_by_what_it_has() -> None:
    pool = GpuPool([Gpu(0, "NVIDIA L4"), Gpu(1, "NVIDIA L4")])
    got = pool.acquire("w1", 1, "HOPPER_141")
    assert got is not None and got[0].index == 0
    notice = placement_notice("HOPPER_141", 1, pool.gpus)
    assert notice is not None and "HOPPER_141" in notice and "0: NVIDIA L4" in notice
    assert placement_notice("AMPERE_24", 1, pool.gpus) is None  # the L4 is an AMPERE_24
    assert "no NVIDIA GPU" in (placement_notice("any", 1, []) or "")


@pytest.fixture
def gpu_platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("FLASH_PLATFORM_GPUS", ";".join(g.name for g in FOUR))
    artifact = build_app("gpu_devices", tmp_path / "apps")
    with InProcessPlatform(tmp_path / "home") as platform:
        monkeypatch.setattr(runpod, "api_key", platform.config.api_key)
        monkeypatch.setattr(runpod, "endpoint_url_base", f"{platform.url}/v2")
        yield platform, artifact


def test_each_worker_gets_its_own_devices(gpu_platform: Any) -> None:
    platform, artifact = gpu_platform
    platform.apply(
        endpoint_spec("gpus0000000001", "gpu-devices", artifact, workers_min=2, workers_max=2,
                      gpu_count=1, gpu_ids="AMPERE_80")
    )  # fmt: skip
    platform.apply(
        endpoint_spec("gpus0000000002", "gpu-devices", artifact, workers_min=1, workers_max=1,
                      gpu_count=2, gpu_ids="any")
    )  # fmt: skip

    def workers() -> list[dict[str, Any]]:
        return [
            w
            for ep in platform.status()["endpoints"]
            for w in ep["workers"]
            if w["state"] == "ready"
        ]

    wait_until(lambda: len(workers()) == 3, what="three ready GPU workers")
    held = [w["gpus"] for w in workers()]
    assert sorted(i for gpus in held for i in gpus) == [0, 1, 2, 3], held  # none twice
    single = sorted(w["gpus"][0] for w in workers() if len(w["gpus"]) == 1)
    assert single == [1, 2]  # the A100s went to the AMPERE_80 endpoint

    seen = {
        runpod.Endpoint("gpus0000000001").run_sync({}, timeout=60)["cuda_visible_devices"]
        for _ in range(6)
    }
    assert seen <= {"1", "2"} and seen, seen
    pair = runpod.Endpoint("gpus0000000002").run_sync({}, timeout=60)
    assert pair["cuda_visible_devices"] == "0,3"

    # More GPUs per worker than the machine has: refused at deploy, naming what it has.
    with pytest.raises(FlashError, match="asks for 5 GPUs per worker and this machine has 4"):
        platform.apply(endpoint_spec("gpus0000000003", "gpu-devices", artifact, gpu_count=5))
