"""The GraphQL contract: every document the project sends is valid against Runpod's API (as
``tests/runpod_schema.graphql`` records it) and against the local control plane's schema, and so
are the variables the deployer sends with them."""

from __future__ import annotations

from typing import Any

import pytest
from graphql import (
    OperationDefinitionNode,
    parse,
    validate,
)
from support import check_request, schemas

from flash_runtime import manifest as manifest_mod
from flash_runtime.deploy.deployer import (
    DEFAULT_MIN_CUDA_VERSION,
    FINGERPRINT_ENV,
    FLASH_DATACENTERS,
    endpoint_input,
)
from flash_runtime.protocol import operations


@pytest.mark.parametrize("schema_name", ["runpod", "local"])
@pytest.mark.parametrize("name", sorted(operations.ALL))
def test_document_is_valid(name: str, schema_name: str) -> None:
    ast = parse(operations.ALL[name])
    errors = validate(schemas()[schema_name], ast)
    assert not errors, [e.message for e in errors]
    operations_in_document = [d for d in ast.definitions if isinstance(d, OperationDefinitionNode)]
    assert len(operations_in_document) == 1 and operations_in_document[0].name is not None


def _resource(raw: dict[str, Any]) -> manifest_mod.Resource:
    manifest = manifest_mod.from_builtins(
        {
            "version": "1.0",
            "python_version": "3.11",
            "generated_at": "2025-01-01T00:00:00Z",
            "project_name": "contract",
            "resources": {"worker": raw},
            "function_registry": {"fn": "worker"},
            "routes": {"worker": {"POST /run-it": "fn"}} if raw["is_load_balanced"] else {},
        }
    )
    return manifest.resources["worker"]


@pytest.mark.parametrize("schema_name", ["runpod", "local"])
@pytest.mark.parametrize(
    "raw",
    [
        {
            "resource_type": "LoadBalancerSlsResource",
            "file_path": "api.py",
            "module_path": "api",
            "functions": [
                {
                    "name": "fn",
                    "module": "api",
                    "is_async": True,
                    "is_class": False,
                    "http_method": "POST",
                    "http_path": "/run-it",
                }
            ],
            "is_load_balanced": True,
            "makes_remote_calls": True,
            "imageName": "runpod/flash-lb-cpu:py3.11-latest",
            "instanceIds": ["cpu3c-1-2"],
            "workersMin": 1,
            "workersMax": 3,
            "scalerType": "REQUEST_COUNT",
            "env": {"MODE": "test"},
            "networkVolume": {"id": "vol123", "name": "cache"},
        },
        {
            "resource_type": "ServerlessEndpoint",
            "file_path": "gpu.py",
            "module_path": "gpu",
            "functions": [{"name": "fn", "module": "gpu", "is_async": False, "is_class": False}],
            "is_load_balanced": False,
            "imageName": "runpod/flash:py3.11-latest",
            "gpuIds": "AMPERE_16",
            "gpuCount": 2,
            "minCudaVersion": "12.8",
            "locations": "US-GA-1",
            "networkVolumes": [{"id": "vol1"}, {"id": "vol2", "dataCenterId": "US-GA-1"}],
        },
    ],
    ids=["lb-cpu", "qb-gpu"],
)
def test_save_endpoint_payload_fits_endpoint_input(raw: dict[str, Any], schema_name: str) -> None:
    payload = endpoint_input(
        "worker",
        _resource(raw),
        app="contract",
        environment="production",
        environment_id="env-1",
        api_key="key",
    )
    check_request(schemas()[schema_name], operations.SAVE_ENDPOINT, {"input": payload})
    check_request(
        schemas()[schema_name], operations.SAVE_ENDPOINT, {"input": {**payload, "id": "abc"}}
    )


def test_contract_check_rejects_unknown_fields() -> None:
    """The check has teeth: a field Runpod's EndpointInput lacks is refused."""
    with pytest.raises(AssertionError):
        check_request(
            schemas()["runpod"],
            operations.SAVE_ENDPOINT,
            {"input": {"name": "x", "maxConcurrency": 3}},
        )
    with pytest.raises(AssertionError):
        check_request(schemas()["runpod"], "query q { myself { url } }", {})


def test_gpu_endpoints_get_the_cuda_and_placement_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RUNPOD_DEFAULT_LOCATIONS", "RUNPOD_DEFAULT_DATACENTER"):
        monkeypatch.delenv(name, raising=False)
    gpu = {
        "resource_type": "ServerlessEndpoint",
        "file_path": "gpu.py",
        "module_path": "gpu",
        "functions": [{"name": "fn", "module": "gpu", "is_async": False, "is_class": False}],
        "is_load_balanced": False,
        "imageName": "runpod/flash:py3.11-latest",
        "gpuIds": "AMPERE_16",
    }
    cpu = {**gpu, "gpuIds": None, "instanceIds": ["cpu3c-1-2"]}

    def payload(raw: dict[str, Any]) -> dict[str, Any]:
        return endpoint_input(
            "worker",
            _resource(raw),
            app="a",
            environment="e",
            environment_id="env-1",
            api_key="k",
            fingerprint="f1",
        )

    on_gpu = payload(gpu)
    assert on_gpu["minCudaVersion"] == DEFAULT_MIN_CUDA_VERSION == "12.8"
    assert on_gpu["locations"].split(",") == list(FLASH_DATACENTERS)
    env = {kv["key"]: kv["value"] for kv in on_gpu["template"]["env"]}
    assert env[FINGERPRINT_ENV] == "f1"
    assert on_gpu["template"]["name"].startswith("a__e__worker__")
    # A CPU endpoint is placed by Runpod; the resource's own choice and the env win.
    assert "locations" not in payload(cpu) and "minCudaVersion" not in payload(cpu)
    assert payload({**gpu, "locations": "EU-RO-1"})["locations"] == "EU-RO-1"
    monkeypatch.setenv("RUNPOD_DEFAULT_DATACENTER", "US-KS-2")
    assert payload(cpu)["locations"] == "US-KS-2"
    # The template's name follows the configuration: another config, another name.
    assert payload({**gpu, "gpuCount": 2})["template"]["name"] != on_gpu["template"]["name"]
