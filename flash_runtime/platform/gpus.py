"""The host's NVIDIA GPUs, and which worker holds which.

A GPU endpoint's worker gets ``gpuCount`` GPUs of its own (``CUDA_VISIBLE_DEVICES`` for a
process, ``--gpus device=...`` for a container), never shared with another live worker; when
too few are free, the worker waits (its endpoint is told why) until a worker holding some exits.
A requested GPU type the host lacks is a notice at deploy naming what the host has; on a host
without GPUs a GPU endpoint runs on the CPU, with a notice.

The devices are read from ``nvidia-smi`` once, at platform start; ``FLASH_PLATFORM_GPUS``
(``"NVIDIA H200;NVIDIA L4"``: one name per device, or ``none``) replaces that list, for tests and
for machines whose GPUs the platform must not use.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

# Runpod's GPU pools (the unit of ``gpuIds``) and the models in each.
POOLS: dict[str, tuple[str, ...]] = {
    "AMPERE_16": ("NVIDIA RTX A4000", "NVIDIA RTX A4500", "NVIDIA RTX 4000 Ada Generation",
                  "NVIDIA RTX 2000 Ada Generation"),
    "AMPERE_24": ("NVIDIA RTX A5000", "NVIDIA L4", "NVIDIA GeForce RTX 3090"),
    "ADA_24": ("NVIDIA GeForce RTX 4090",),
    "ADA_32_PRO": ("NVIDIA GeForce RTX 5090",),
    "AMPERE_48": ("NVIDIA A40", "NVIDIA RTX A6000"),
    "ADA_48_PRO": ("NVIDIA RTX 6000 Ada Generation", "NVIDIA L40", "NVIDIA L40S"),
    "AMPERE_80": ("NVIDIA A100 80GB PCIe", "NVIDIA A100-SXM4-80GB"),
    "ADA_80_PRO": ("NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H100 NVL"),
    "HOPPER_141": ("NVIDIA H200",),
    "BLACKWELL_96": ("NVIDIA RTX PRO 6000 Blackwell Server Edition",
                     "NVIDIA RTX PRO 6000 Blackwell Workstation Edition",
                     "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition"),
    "BLACKWELL_180": ("NVIDIA B200",),
}  # fmt: skip


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str


def detect(env: Mapping[str, str] | None = None) -> list[Gpu]:
    """The host's GPUs: ``FLASH_PLATFORM_GPUS`` when set, else what ``nvidia-smi`` lists."""
    env = os.environ if env is None else env
    configured = env.get("FLASH_PLATFORM_GPUS")
    if configured is not None:
        if configured.strip().lower() in ("", "none"):
            return []
        names = [n.strip() for n in configured.split(";") if n.strip()]
        return [Gpu(i, name) for i, name in enumerate(names)]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        done = subprocess.run(
            [smi, "--query-gpu=index,name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    gpus = []
    for line in done.stdout.splitlines() if done.returncode == 0 else []:
        index, _, name = line.partition(",")
        if index.strip().isdigit():
            gpus.append(Gpu(int(index), name.strip()))
    return gpus


def wanted_models(gpu_ids: str) -> set[str] | None:
    """The GPU models ``gpuIds`` admits (pools expanded), or None for any."""
    models: set[str] = set()
    for part in (p.strip() for p in (gpu_ids or "").split(",")):
        if not part or part.lower() == "any":
            return None
        negated = part.startswith("-")  # Runpod's "-NVIDIA L4": every model of the pools but it
        if negated:
            continue
        models.update(POOLS.get(part, (part,)))
    return models or None


def _fits(gpu: Gpu, models: set[str] | None) -> bool:
    return models is None or any(gpu.name.lower() == m.lower() for m in models)


def placement_notice(gpu_ids: str, count: int, gpus: list[Gpu]) -> str | None:
    """What a deploy should say about where a GPU endpoint's workers run here, if anything."""
    if not gpus:
        return (
            "this machine has no NVIDIA GPU: its workers run on the CPU (CUDA_VISIBLE_DEVICES "
            "is empty)"
        )
    have = ", ".join(f"{g.index}: {g.name}" for g in gpus)
    models = wanted_models(gpu_ids)
    fitting = [g for g in gpus if _fits(g, models)]
    if not fitting:
        return (
            f"asks for {gpu_ids} and this machine has none of those GPUs (it has {have}): its "
            "workers get the machine's GPUs instead"
        )
    return None


class GpuPool:
    """Which live worker holds which of the host's GPUs."""

    def __init__(self, gpus: list[Gpu]) -> None:
        self.gpus = list(gpus)
        self._held: dict[int, str] = {}  # GPU index -> worker id

    def acquire(self, worker_id: str, count: int, gpu_ids: str = "any") -> list[Gpu] | None:
        """``count`` free GPUs for ``worker_id`` (preferring the models ``gpu_ids`` admits),
        or None when not that many are free (never a GPU another worker holds)."""
        free = [g for g in self.gpus if g.index not in self._held]
        models = wanted_models(gpu_ids)
        if any(_fits(g, models) for g in self.gpus):
            free = [g for g in free if _fits(g, models)]
        if count <= 0 or len(free) < count:
            return None
        chosen = free[:count]
        for gpu in chosen:
            self._held[gpu.index] = worker_id
        return chosen

    def release(self, worker_id: str) -> None:
        for index in [i for i, holder in self._held.items() if holder == worker_id]:
            del self._held[index]

    def held_by(self, worker_id: str) -> list[int]:
        return sorted(i for i, holder in self._held.items() if holder == worker_id)
