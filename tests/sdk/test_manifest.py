"""The manifest schema: load, validate, dump, unknown keys kept, clear errors."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from flash_runtime import manifest as m
from flash_runtime.errors import ManifestError

# Shaped like a runpod-flash 1.21 manifest, including keys our schema does not declare
# (local_path_prefix, config_variable, template, handler_file, target_python_version).
REFERENCE_SHAPED: dict[str, Any] = {
    "version": "1.0",
    "python_version": "3.11",
    "generated_at": "2026-01-01T00:00:00Z",
    "project_name": "demo",
    "resources": {
        "gpu_worker": {
            "resource_type": "ServerlessEndpoint",
            "file_path": "gpu_worker.py",
            "local_path_prefix": "/gpu_worker",
            "module_path": "gpu_worker",
            "functions": [
                {
                    "name": "gpu_hello",
                    "module": "gpu_worker",
                    "is_async": True,
                    "is_class": False,
                    "decorator_line": 7,
                }
            ],
            "is_load_balanced": False,
            "makes_remote_calls": False,
            "imageName": "runpod/flash:py3.11-latest",
            "gpuIds": "ADA_24,AMPERE_16",
            "workersMin": 0,
            "workersMax": 1,
            "idleTimeout": 60,
            "scalerType": "QUEUE_DELAY",
            "scalerValue": 4,
            "template": {"containerDiskInGb": 64},
            "handler_file": "handler_gpu_worker.py",
        },
        "lb_worker": {
            "resource_type": "CpuLoadBalancerSlsResource",
            "file_path": "lb_worker.py",
            "module_path": "lb_worker",
            "config_variable": "api",
            "functions": [
                {
                    "name": "process",
                    "module": "lb_worker",
                    "is_async": True,
                    "is_class": False,
                    "http_method": "POST",
                    "http_path": "/process",
                }
            ],
            "is_load_balanced": True,
            "instanceIds": ["cpu3c-1-2"],
            "workersMin": 1,
            "workersMax": 3,
            "scalerType": "REQUEST_COUNT",
        },
    },
    "function_registry": {"gpu_hello": "gpu_worker", "process": "lb_worker"},
    "routes": {"lb_worker": {"POST /process": "process"}},
    "source_fingerprint": "abc",
    "target_python_version": "3.11",
}


def test_round_trip_keeps_unknown_keys(tmp_path: Path) -> None:
    manifest = m.from_builtins(copy.deepcopy(REFERENCE_SHAPED))
    assert manifest.resources["lb_worker"].endpoint_type == "lb"
    assert manifest.resources["gpu_worker"].is_gpu
    path = tmp_path / m.MANIFEST_NAME
    m.dump(manifest, path)
    again = orjson.loads(path.read_bytes())
    assert again["target_python_version"] == "3.11"
    assert again["resources"]["gpu_worker"]["template"] == {"containerDiskInGb": 64}
    assert again["resources"]["lb_worker"]["config_variable"] == "api"
    assert again["resources"]["gpu_worker"]["functions"][0]["decorator_line"] == 7
    assert m.load(path) == manifest


def test_malformed_json() -> None:
    with pytest.raises(ManifestError, match="not valid JSON"):
        m.loads(b"{nope", "x.json")


def test_wrong_type_names_key_path_and_type() -> None:
    raw = copy.deepcopy(REFERENCE_SHAPED)
    raw["resources"]["lb_worker"]["workersMax"] = "three"
    with pytest.raises(ManifestError) as info:
        m.from_builtins(raw, "flash_manifest.json")
    assert "$.resources.lb_worker.workersMax" in str(info.value)
    assert "Expected `int`" in str(info.value)


def test_missing_key() -> None:
    raw = copy.deepcopy(REFERENCE_SHAPED)
    del raw["resources"]["gpu_worker"]["functions"][0]["module"]
    with pytest.raises(ManifestError, match="missing required field `module`"):
        m.from_builtins(raw)


def test_not_an_object() -> None:
    with pytest.raises(ManifestError, match="expected a JSON object"):
        m.loads(b"[1, 2]")


@pytest.mark.parametrize(
    ("mutate", "fragment"),
    [
        (lambda r: r["function_registry"].update(ghost="nowhere"), "function_registry.ghost"),
        (
            lambda r: r["routes"]["lb_worker"].update({"GET /x": "missing"}),
            "names function 'missing'",
        ),
        (lambda r: r["routes"].update(nope={}), "routes.nope"),
        (lambda r: r.update(version="9.9"), "$.version"),
        (
            lambda r: r["resources"]["lb_worker"]["functions"][0].pop("http_path"),
            "no http_method/http_path",
        ),
        (lambda r: r["resources"]["lb_worker"].update(workersMin=5), "exceeds workersMax"),
    ],
)
def test_cross_reference_errors(mutate: Any, fragment: str) -> None:
    raw = copy.deepcopy(REFERENCE_SHAPED)
    mutate(raw)
    with pytest.raises(ManifestError) as info:
        m.from_builtins(raw)
    assert fragment in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="flash build"):
        m.load(tmp_path / "none.json")


def test_unknown_resource_lists_known() -> None:
    manifest = m.from_builtins(copy.deepcopy(REFERENCE_SHAPED))
    with pytest.raises(ManifestError, match="gpu_worker, lb_worker"):
        manifest.resource("other")
