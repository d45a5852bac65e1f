"""Hardware and placement vocabulary: the values Runpod's API accepts.

Every enum is a ``StrEnum``, so ``GpuType.NVIDIA_GEFORCE_RTX_4090 == "NVIDIA GeForce RTX 4090"``
holds and values serialise into the manifest as plain strings.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class GpuType(StrEnum):
    """A specific GPU model, as Runpod names it."""

    ANY = "any"
    NVIDIA_GEFORCE_RTX_4090 = "NVIDIA GeForce RTX 4090"
    NVIDIA_GEFORCE_RTX_5090 = "NVIDIA GeForce RTX 5090"
    NVIDIA_RTX_6000_ADA_GENERATION = "NVIDIA RTX 6000 Ada Generation"
    NVIDIA_RTX_PRO_6000_BLACKWELL_SERVER_EDITION = "NVIDIA RTX PRO 6000 Blackwell Server Edition"
    NVIDIA_RTX_PRO_6000_BLACKWELL_WORKSTATION_EDITION = (
        "NVIDIA RTX PRO 6000 Blackwell Workstation Edition"
    )
    NVIDIA_RTX_PRO_6000_BLACKWELL_MAX_Q_WORKSTATION_EDITION = (
        "NVIDIA RTX PRO 6000 Blackwell Max-Q Workstation Edition"
    )
    NVIDIA_H100_80GB_HBM3 = "NVIDIA H100 80GB HBM3"
    NVIDIA_RTX_A4000 = "NVIDIA RTX A4000"
    NVIDIA_RTX_A4500 = "NVIDIA RTX A4500"
    NVIDIA_RTX_4000_ADA_GENERATION = "NVIDIA RTX 4000 Ada Generation"
    NVIDIA_RTX_2000_ADA_GENERATION = "NVIDIA RTX 2000 Ada Generation"
    NVIDIA_RTX_A5000 = "NVIDIA RTX A5000"
    NVIDIA_L4 = "NVIDIA L4"
    NVIDIA_GEFORCE_RTX_3090 = "NVIDIA GeForce RTX 3090"
    NVIDIA_A40 = "NVIDIA A40"
    NVIDIA_RTX_A6000 = "NVIDIA RTX A6000"
    NVIDIA_A100_80GB_PCIe = "NVIDIA A100 80GB PCIe"
    NVIDIA_A100_SXM4_80GB = "NVIDIA A100-SXM4-80GB"
    NVIDIA_H200 = "NVIDIA H200"
    NVIDIA_B200 = "NVIDIA B200"


class GpuGroup(StrEnum):
    """A Runpod GPU pool: the unit ``gpuIds`` is written in."""

    ANY = "any"
    ADA_24 = "ADA_24"
    ADA_32_PRO = "ADA_32_PRO"
    ADA_48_PRO = "ADA_48_PRO"
    ADA_80_PRO = "ADA_80_PRO"
    AMPERE_16 = "AMPERE_16"
    AMPERE_24 = "AMPERE_24"
    AMPERE_48 = "AMPERE_48"
    AMPERE_80 = "AMPERE_80"
    HOPPER_141 = "HOPPER_141"
    BLACKWELL_96 = "BLACKWELL_96"
    BLACKWELL_180 = "BLACKWELL_180"


class CpuInstanceType(StrEnum):
    """A CPU worker flavour: ``cpu{generation}{g|c}-{vcpus}-{memory GB}``."""

    CPU3G_1_4 = "cpu3g-1-4"
    CPU3G_2_8 = "cpu3g-2-8"
    CPU3G_4_16 = "cpu3g-4-16"
    CPU3G_8_32 = "cpu3g-8-32"
    CPU3C_1_2 = "cpu3c-1-2"
    CPU3C_2_4 = "cpu3c-2-4"
    CPU3C_4_8 = "cpu3c-4-8"
    CPU3C_8_16 = "cpu3c-8-16"
    CPU5C_1_2 = "cpu5c-1-2"
    CPU5C_2_4 = "cpu5c-2-4"
    CPU5C_4_8 = "cpu5c-4-8"
    CPU5C_8_16 = "cpu5c-8-16"


class DataCenter(StrEnum):
    """A Runpod data centre id."""

    US_CA_2 = "US-CA-2"
    US_IL_1 = "US-IL-1"
    US_KS_2 = "US-KS-2"
    US_MO_1 = "US-MO-1"
    US_MO_2 = "US-MO-2"
    US_NC_2 = "US-NC-2"
    US_NE_1 = "US-NE-1"
    US_WA_1 = "US-WA-1"
    EU_CZ_1 = "EU-CZ-1"
    EU_RO_1 = "EU-RO-1"
    EUR_NO_1 = "EUR-NO-1"


class CudaVersion(StrEnum):
    """Minimum CUDA driver version a GPU worker may be scheduled on."""

    V11_8 = "11.8"
    V12_0 = "12.0"
    V12_1 = "12.1"
    V12_2 = "12.2"
    V12_3 = "12.3"
    V12_4 = "12.4"
    V12_5 = "12.5"
    V12_6 = "12.6"
    V12_7 = "12.7"
    V12_8 = "12.8"
    V12_9 = "12.9"
    V13_0 = "13.0"


class ScalerType(StrEnum):
    """How Runpod decides to add workers (runpod-flash's name: ``ServerlessScalerType``)."""

    QUEUE_DELAY = "QUEUE_DELAY"
    REQUEST_COUNT = "REQUEST_COUNT"


ServerlessScalerType = ScalerType


class ServerlessType(StrEnum):
    """An endpoint's kind: queue-based or load-balanced."""

    QB = "QB"
    LB = "LB"


DEFAULT_WORKERS_MIN = 0
DEFAULT_WORKERS_MAX = 1
# The data centres Runpod serves CPU endpoints from (runpod-flash 1.21's list).
CPU_DATACENTERS: frozenset[DataCenter] = frozenset({DataCenter.EU_RO_1})


@dataclass(frozen=True)
class PodTemplate:
    """Overrides of the worker template an endpoint runs (``Endpoint(template=...)``).

    flash_runtime applies ``imageName``, ``env`` (merged over the endpoint's ``env``; a list of
    ``{"key", "value"}`` as runpod-flash takes it, or a dict), ``containerDiskInGb`` and
    ``dockerArgs``. runpod-flash's other fields (``ports``, ``startScript``, ``advancedStart``,
    ``config``, ``containerRegistryAuthId``, ``name``, ``id``) are refused when set: the
    deployer names, exposes and starts the template itself.
    """

    imageName: str | None = None
    env: Any = None
    containerDiskInGb: int | None = None
    dockerArgs: str | None = None
    ports: str | None = None
    startScript: str | None = None
    advancedStart: bool | None = None
    config: dict[str, Any] | None = None
    containerRegistryAuthId: str | None = None
    name: str | None = None
    id: str | None = None

    def __post_init__(self) -> None:
        from .errors import ConfigurationError

        unapplied = ("ports", "startScript", "advancedStart", "config", "containerRegistryAuthId")
        refused = [
            f for f in (*unapplied, "name", "id") if getattr(self, f) not in (None, "", {}, False)
        ]
        if refused:
            raise ConfigurationError(
                f"PodTemplate({', '.join(f'{f}=...' for f in refused)}): not applied by "
                "flash_runtime (the deployer names, exposes and starts each worker template); "
                "use imageName, env, containerDiskInGb or dockerArgs"
            )
        if self.containerDiskInGb is not None and (
            not isinstance(self.containerDiskInGb, int) or not 1 <= self.containerDiskInGb <= 2048
        ):
            raise ConfigurationError(
                f"PodTemplate containerDiskInGb={self.containerDiskInGb!r} must be 1-2048 GB"
            )
        object.__setattr__(self, "env", self._env(self.env))

    @staticmethod
    def _env(value: Any) -> dict[str, str]:
        from .errors import ConfigurationError

        if value is None:
            return {}
        pairs: Iterable[Any] = value.items() if isinstance(value, dict) else value
        out: dict[str, str] = {}
        for pair in pairs:
            if isinstance(pair, tuple) and len(pair) == 2:
                key, val = pair
            elif isinstance(pair, dict) and set(pair) == {"key", "value"}:
                key, val = pair["key"], pair["value"]
            else:
                raise ConfigurationError(
                    "PodTemplate env must be a dict of str to str or a list of "
                    f"{{'key': ..., 'value': ...}}, not {pair!r}"
                )
            if not isinstance(key, str) or not isinstance(val, str):
                raise ConfigurationError(f"PodTemplate env {key!r}: keys and values are strings")
            out[key] = val
        return out


# Which GPU models each pool holds. Selecting a model means "its pool, minus the pool's other
# models", which Runpod spells as negated entries ("-NVIDIA L4").
POOL_MODELS: dict[GpuGroup, tuple[GpuType, ...]] = {
    GpuGroup.ADA_24: (GpuType.NVIDIA_GEFORCE_RTX_4090,),
    GpuGroup.ADA_32_PRO: (GpuType.NVIDIA_GEFORCE_RTX_5090,),
    GpuGroup.ADA_48_PRO: (GpuType.NVIDIA_RTX_6000_ADA_GENERATION,),
    GpuGroup.ADA_80_PRO: (GpuType.NVIDIA_H100_80GB_HBM3,),
    GpuGroup.AMPERE_16: (
        GpuType.NVIDIA_RTX_A4000,
        GpuType.NVIDIA_RTX_A4500,
        GpuType.NVIDIA_RTX_4000_ADA_GENERATION,
        GpuType.NVIDIA_RTX_2000_ADA_GENERATION,
    ),
    GpuGroup.AMPERE_24: (
        GpuType.NVIDIA_RTX_A5000,
        GpuType.NVIDIA_L4,
        GpuType.NVIDIA_GEFORCE_RTX_3090,
    ),
    GpuGroup.AMPERE_48: (GpuType.NVIDIA_A40, GpuType.NVIDIA_RTX_A6000),
    GpuGroup.AMPERE_80: (GpuType.NVIDIA_A100_80GB_PCIe, GpuType.NVIDIA_A100_SXM4_80GB),
    GpuGroup.HOPPER_141: (GpuType.NVIDIA_H200,),
    GpuGroup.BLACKWELL_96: (
        GpuType.NVIDIA_RTX_PRO_6000_BLACKWELL_SERVER_EDITION,
        GpuType.NVIDIA_RTX_PRO_6000_BLACKWELL_WORKSTATION_EDITION,
        GpuType.NVIDIA_RTX_PRO_6000_BLACKWELL_MAX_Q_WORKSTATION_EDITION,
    ),
    GpuGroup.BLACKWELL_180: (GpuType.NVIDIA_B200,),
}


def gpu_ids(selection: Iterable[GpuType | GpuGroup]) -> str:
    """Render a GPU selection as Runpod's ``gpuIds`` string (sorted, so it hashes stably)."""
    pools: set[str] = set()
    negations: set[str] = set()
    chosen_models: dict[GpuGroup, set[GpuType]] = {}
    whole_pools: set[GpuGroup] = set()
    for item in selection:
        if item in (GpuType.ANY, GpuGroup.ANY):
            whole_pools.update(POOL_MODELS)
        elif isinstance(item, GpuGroup):
            whole_pools.add(item)
        else:
            pool = next(p for p, models in POOL_MODELS.items() if item in models)
            chosen_models.setdefault(pool, set()).add(item)
    pools.update(p.value for p in whole_pools)
    for pool, models in chosen_models.items():
        pools.add(pool.value)
        if pool not in whole_pools:
            negations.update(f"-{m.value}" for m in POOL_MODELS[pool] if m not in models)
    return ",".join(sorted(pools, key=str.lower) + sorted(negations, key=str.lower))


@dataclass(frozen=True)
class NetworkVolume:
    """A persistent network volume mounted at ``/runpod-volume`` on every worker.

    Give ``id`` to attach an existing volume, or ``name`` (and ``size`` in GB) to have deploy
    create it in ``datacenter``.
    """

    id: str | None = None
    name: str | None = None
    size: int = 100
    datacenter: DataCenter | str = DataCenter.EU_RO_1

    def __post_init__(self) -> None:
        from .errors import ConfigurationError

        if not self.id and not self.name:
            raise ConfigurationError("NetworkVolume needs an id (existing volume) or a name.")
        if not 10 <= self.size <= 4096:
            raise ConfigurationError(
                f"NetworkVolume size must be between 10 and 4096 GB, got {self.size}."
            )
        try:
            object.__setattr__(self, "datacenter", DataCenter(self.datacenter))
        except ValueError:
            raise ConfigurationError(
                f"NetworkVolume datacenter {self.datacenter!r} is not a Runpod data centre; "
                f"use one of: {', '.join(d.value for d in DataCenter)}."
            ) from None

    def to_manifest(self) -> dict[str, object]:
        """One entry of a manifest resource's ``networkVolumes``."""
        out: dict[str, object] = {"size": self.size, "dataCenterId": str(self.datacenter)}
        if self.id:
            out["id"] = self.id
        if self.name:
            out["name"] = self.name
        return out
