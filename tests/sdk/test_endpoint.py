"""The SDK: configuration, validation errors, decoration and local calls."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flash_runtime import (
    ConfigurationError,
    CpuInstanceType,
    CudaVersion,
    DataCenter,
    Endpoint,
    GpuGroup,
    GpuType,
    NetworkVolume,
    RemoteCallError,
)
from flash_runtime.endpoint import endpoint_of, unwrap
from flash_runtime.resources import gpu_ids


def test_enum_values_follow_runpod() -> None:
    # The members are the strings themselves (StrEnum): compared with plain str values.
    values: list[tuple[str, str]] = [
        (GpuType.NVIDIA_GEFORCE_RTX_4090, "NVIDIA GeForce RTX 4090"),
        (GpuGroup.AMPERE_16, "AMPERE_16"),
        (CpuInstanceType.CPU5C_4_8, "cpu5c-4-8"),
        (DataCenter.EU_RO_1, "EU-RO-1"),
        (CudaVersion.V12_8, "12.8"),
    ]
    for member, text in values:
        assert member == text
    assert str(GpuType.NVIDIA_L4) == "NVIDIA L4"


def test_runpod_flash_alias_exports_the_same_objects() -> None:
    import flash_runtime
    import runpod_flash

    for name in (
        "Endpoint",
        "GpuType",
        "GpuGroup",
        "CpuInstanceType",
        "DataCenter",
        "CudaVersion",
        "NetworkVolume",
    ):
        assert getattr(runpod_flash, name) is getattr(flash_runtime, name)


def test_sdk_import_is_cheap() -> None:
    code = (
        "import sys\n"
        "from runpod_flash import Endpoint, GpuType\n"
        "heavy = [m for m in ('aiohttp', 'starlette', 'uvicorn', 'runpod', 'msgspec', 'orjson') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_workers_forms() -> None:
    assert Endpoint("a").workers == (0, 1)
    assert Endpoint("b", workers=3).workers == (0, 3)
    assert Endpoint("c", workers=(1, 5)).workers == (1, 5)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"gpu": GpuType.NVIDIA_L4, "cpu": "cpu3c-1-2"}, "gpu and cpu are exclusive"),
        ({"workers": (3, 1)}, "not a valid (min, max) range"),
        ({"workers": 0}, "at least 1"),
        ({"workers": "3"}, "must be an int"),
        ({"gpu": "NVIDIA GeForce GTX 9999"}, "neither a GpuType nor a GpuGroup"),
        ({"cpu": "cpu9z-1-1"}, "not a valid CpuInstanceType"),
        ({"datacenter": "MARS-1"}, "not a valid DataCenter"),
        ({"min_cuda_version": "7.0"}, "not a valid CudaVersion"),
        ({"scaler_type": "RANDOM"}, "not a valid ScalerType"),
        ({"max_concurrency": 0}, "max_concurrency=0"),
        ({"idle_timeout": -1}, "idle_timeout=-1"),
        ({"dependencies": "torch"}, "list of strings"),
        ({"env": {"A": 1}}, "dict of str to str"),
        ({"volume": "vol"}, "NetworkVolume"),
    ],
)
def test_invalid_configuration_names_endpoint_and_fix(
    kwargs: dict[str, object], fragment: str
) -> None:
    with pytest.raises(ConfigurationError) as info:
        Endpoint("bad-one", **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "'bad-one'" in message
    assert fragment in message
    assert "test_endpoint.py" in message  # points at the user's line


def test_bad_names() -> None:
    with pytest.raises(ConfigurationError, match="give it a name"):
        Endpoint()
    with pytest.raises(ConfigurationError, match="not valid"):
        Endpoint("has space")


@pytest.fixture
def local_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """FLASH_CALLS=local: decorated functions run in this process (a call from outside the
    function's endpoint still returns an awaitable, as it would leaving the process)."""
    monkeypatch.setenv("FLASH_CALLS", "local")


@pytest.mark.usefixtures("local_calls")
def test_queue_decorator_function_and_local_call() -> None:
    ep = Endpoint("qb-sync", cpu=CpuInstanceType.CPU3C_1_2)

    @ep
    def double(x: int) -> int:
        return x * 2

    assert asyncio.run(double(4)) == 8
    assert endpoint_of(double) is ep
    assert ep.kind == "qb"
    assert unwrap(double).__name__ == "double"


@pytest.mark.usefixtures("local_calls")
def test_async_function_stays_awaitable() -> None:
    @Endpoint("qb-async")
    async def add(a: int, b: int) -> int:
        return a + b

    assert asyncio.iscoroutinefunction(add)
    assert asyncio.run(add(1, 2)) == 3


@pytest.mark.usefixtures("local_calls")
def test_class_endpoint() -> None:
    @Endpoint("qb-class", gpu=GpuGroup.ADA_24)
    class Model:
        def __init__(self) -> None:
            self.k = 3

        def predict(self, x: int) -> int:
            return x * self.k

    model: Any = Model()  # typed as the class; seen from outside, its methods are awaitable
    assert asyncio.run(model.predict(2)) == 6
    assert endpoint_of(Model).kind == "qb"  # type: ignore[union-attr]


def test_one_function_per_queue_endpoint() -> None:
    ep = Endpoint("qb-one")

    @ep
    def first() -> None: ...

    with pytest.raises(ConfigurationError, match="exactly one function"):

        @ep
        def second() -> None: ...


@pytest.mark.usefixtures("local_calls")
def test_routes_and_errors() -> None:
    api = Endpoint("api", cpu="cpu5c-4-8", workers=(1, 5))

    @api.post("/generate")
    def generate(prompt: str) -> dict[str, str]:
        return {"text": prompt}

    @api.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    assert api.kind == "lb"
    assert [r.key for r in api.routes] == ["POST /generate", "GET /health"]
    assert asyncio.run(generate("hi")) == {"text": "hi"}
    with pytest.raises(ConfigurationError, match="declared twice"):
        api.post("/generate")
    with pytest.raises(ConfigurationError, match="reserved"):
        api.get("/ping")
    with pytest.raises(ConfigurationError, match="reserved"):
        api.post("/execute")
    with pytest.raises(ConfigurationError, match="must start with '/'"):
        api.get("nope")
    with pytest.raises(ConfigurationError, match="already has HTTP routes"):

        @api
        def queued() -> None: ...


def test_mixing_queue_then_routes() -> None:
    ep = Endpoint("mixed")

    @ep
    def job() -> None: ...

    with pytest.raises(ConfigurationError, match="queue-based endpoint"):
        ep.get("/x")


def test_deploy_config() -> None:
    gpu = Endpoint(
        "gpu-cfg",
        gpu=[GpuType.NVIDIA_GEFORCE_RTX_4090, GpuGroup.AMPERE_80],
        workers=(1, 3),
        datacenter=DataCenter.US_KS_2,
        env={"A": "b"},
        volume=NetworkVolume(name="cache", size=50),
        min_cuda_version=CudaVersion.V12_4,
        execution_timeout_ms=5000,
        dependencies=["torch"],
    )
    cfg = gpu.deploy_config()
    assert cfg["gpuIds"] == "ADA_24,AMPERE_80"
    assert cfg["workersMin"] == 1 and cfg["workersMax"] == 3
    assert cfg["locations"] == "US-KS-2"
    assert cfg["networkVolumes"] == [{"size": 50, "dataCenterId": "EU-RO-1", "name": "cache"}]
    assert cfg["minCudaVersion"] == "12.4"
    assert cfg["executionTimeoutMs"] == 5000
    assert cfg["scalerType"] == "QUEUE_DELAY"
    cpu = Endpoint("cpu-cfg", cpu="cpu3c-1-2")
    cpu.get("/x")(lambda: None)
    assert cpu.deploy_config()["instanceIds"] == ["cpu3c-1-2"]
    assert cpu.deploy_config()["scalerType"] == "REQUEST_COUNT"
    assert "gpuIds" not in cpu.deploy_config()


def test_gpu_ids_negates_unselected_models_of_a_pool() -> None:
    assert gpu_ids([GpuType.NVIDIA_L4]) == "AMPERE_24,-NVIDIA GeForce RTX 3090,-NVIDIA RTX A5000"
    assert gpu_ids([GpuGroup.ANY]).startswith("ADA_24,ADA_32_PRO")


def test_call_from_another_resource_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    @Endpoint("other-res")
    async def remote_fn(x: int) -> int:
        return x

    @Endpoint("other-res-sync")
    def remote_sync(x: int) -> int:
        return x

    monkeypatch.setenv("FLASH_RESOURCE_NAME", "this-res")
    monkeypatch.setenv("FLASH_APP_DIR", str(tmp_path))  # a worker without its artifact
    with pytest.raises(RemoteCallError, match="no manifest here") as info:
        asyncio.run(remote_fn(1))
    assert (info.value.endpoint, info.value.cause) == ("other-res", "not_deployed")
    # A call that leaves the worker is network I/O: awaitable even for a plain def.
    pending: Any = remote_sync(1)
    with pytest.raises(RemoteCallError, match="other-res-sync"):
        asyncio.run(pending)
    monkeypatch.setenv("FLASH_RESOURCE_NAME", "other-res-sync")
    assert remote_sync(5) == 5
