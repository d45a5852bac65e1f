"""The platform's surfaces for the Runpod SDK 2.0, one by one: secrets, the /v2 REST, the
manifest's conversion, image kinds, mounts, the TLS front's certificates.
(``tests/e2e/test_sdk2_apps.py`` drives them all with the real 2.0 client.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support import ControlPlaneServer, request

from flash_runtime import appmanifest
from flash_runtime.platform import imageenvs, tls
from flash_runtime.platform.backends import rebind_mounts
from flash_runtime.platform.secretstore import SecretError, SecretStore
from flash_runtime.protocol.controlplane import GraphQLRequestError
from flash_runtime.protocol.local import PlatformConfig


def test_secrets_are_written_once_listed_without_values_and_rendered() -> None:
    store = SecretStore.in_memory()
    made = store.create("hf-token", "v4lue", "for the model")
    assert [s.name for s in store.list()] == ["hf-token"] and made.description == "for the model"
    with pytest.raises(SecretError, match="already exists"):
        store.create("hf-token", "other")
    for name in ("", "has space", "x" * 101):
        with pytest.raises(SecretError, match="invalid secret name"):
            store.create(name, "v")
    with pytest.raises(SecretError, match="needs a value"):
        store.create("empty", "")
    with pytest.raises(SecretError, match="at most"):
        store.create("huge", "x" * (65 * 1024))
    env = {
        "TOKEN": "{{ RUNPOD_SECRET_hf-token }}",
        "BOTH": "a={{RUNPOD_SECRET_hf-token}} b={{ RUNPOD_SECRET_missing }}",
        "PLAIN": "x",
    }
    assert store.render(env) == {
        "TOKEN": "v4lue",
        "BOTH": "a=v4lue b={{ RUNPOD_SECRET_missing }}",  # as a Runpod worker would see it
        "PLAIN": "x",
    }
    assert store.render({"PLAIN": "x"}) == {"PLAIN": "x"}
    assert store.delete(made.id) and store.list() == []
    store.create("again", "v")
    assert store.delete("again")  # by name too
    with pytest.raises(SecretError, match="not found"):
        store.delete("again")


def test_secrets_over_graphql(control_plane: ControlPlaneServer) -> None:
    cp = control_plane

    def gql(document: str, variables: dict[str, Any] | None = None) -> Any:
        return cp.call(lambda c: c.execute(document, variables))

    created = gql(
        "mutation m($input: SecretCreateInput!) { secretCreate(input: $input) { id name } }",
        {"input": {"name": "api-key", "value": "s3cret", "description": ""}},
    )["secretCreate"]
    listed = gql("{ myself { secrets { id name description createdAt } } }")
    assert listed["myself"]["secrets"][0]["name"] == "api-key"
    assert "s3cret" not in json.dumps(listed)
    with pytest.raises(GraphQLRequestError, match="already exists"):
        gql(
            "mutation m($input: SecretCreateInput!) { secretCreate(input: $input) { id } }",
            {"input": {"name": "api-key", "value": "x"}},
        )
    assert gql("mutation m($id: ID!) { secretDelete(id: $id) }", {"id": created["id"]})
    with pytest.raises(GraphQLRequestError, match="not found"):
        gql("mutation m($id: ID!) { secretDelete(id: $id) }", {"id": created["id"]})


def test_the_v2_rest_the_sdk_reads(control_plane: ControlPlaneServer) -> None:
    cp = control_plane
    url, key = cp.config.url, cp.config.api_key
    assert request("GET", f"{url}/v2/serverless", "wrong")[0] == 401
    assert request("GET", f"{url}/v2/serverless", key) == (200, {"endpoints": []})
    status, body = request("GET", f"{url}/v2/serverless/nope", key)
    assert status == 404 and body["title"] == "Not Found" and "nope" in body["detail"]
    status, body = request("POST", f"{url}/v2/serverless", key, {"name": "plain"})
    assert status == 400 and "saveEndpoint" in body["detail"]

    assert request("GET", f"{url}/v2/network-volumes", key) == (
        200,
        {"networkVolumes": [], "pagination": {"hasNextPage": False}},
    )
    for bad, field in (
        ({"name": "", "size": 10, "dataCenter": "EU-RO-1"}, "name"),
        ({"name": "v", "size": 5, "dataCenter": "EU-RO-1"}, "size"),
        ({"name": "v", "size": 10, "dataCenter": "MOON-1"}, "dataCenter"),
    ):
        status, body = request("POST", f"{url}/v2/network-volumes", key, bad)
        assert status == 400 and body["detail"].startswith(field)
    status, made = request(
        "POST",
        f"{url}/v2/network-volumes",
        key,
        {"name": "data", "size": 10, "dataCenter": "EU-RO-1"},
    )
    assert status == 200 and made["name"] == "data" and made["dataCenter"] == "EU-RO-1"
    listed = request("GET", f"{url}/v2/network-volumes", key)[1]
    assert [v["id"] for v in listed["networkVolumes"]] == [made["id"]]
    assert request("GET", f"{url}/v2/network-volumes?cursor=x", key)[0] == 400

    assert request("GET", f"{url}/v2/global-volumes", key)[1]["globalVolumes"] == []
    assert request("POST", f"{url}/v2/global-volumes", key, {"name": "g"})[0] == 400
    centres = request("GET", f"{url}/v2/catalog/datacenters", key)[1]["dataCenters"]
    assert {"id": "EU-RO-1", "networkVolumeTypes": ["STANDARD"]} in centres
    cpu = request("GET", f"{url}/v2/catalog/cpus/cpu3c?vcpuCount=2", key)[1]
    assert {dc["availability"] for dc in cpu["dataCenters"]} == {"HIGH"}
    gpu = request("GET", f"{url}/v2/catalog/gpus/NVIDIA%20L4?count=1", key)[1]
    assert {dc["availability"] for dc in gpu["dataCenters"]} == {"NONE"}  # no GPUs here


def test_a_2_0_manifest_is_seen_as_a_flash_manifest() -> None:
    raw = {
        "version": 1,
        "app": "shop",
        "pythonVersion": "3.11",
        "resources": [
            {"kind": "queue", "name": "q", "module": "m", "qualname": "f", "maxConcurrency": 2},
            {
                "kind": "api",
                "name": "a",
                "module": "m",
                "qualname": "A",
                "routes": [{"method": "POST", "path": "/x", "handler": "x"}],
            },
            {"kind": "api", "name": "w", "module": "m", "qualname": "web", "asgiFactory": "web"},
            {"kind": "task", "name": "t", "module": "m", "qualname": "t"},
        ],
        "resources_endpoints": {"a": "http://127.0.0.1:1"},
    }
    assert appmanifest.is_app_manifest(raw) and not appmanifest.is_app_manifest({"resources": {}})
    view = appmanifest.serving_view(raw)
    assert set(view["resources"]) == {"q", "a", "w"}
    assert view["resources"]["q"]["max_concurrency"] == 2
    assert view["resources"]["a"]["functions"][0]["http_path"] == "/x"
    assert view["resources"]["w"]["functions"][0]["http_method"] == "GET"
    assert view["resources_endpoints"] == {"a": "http://127.0.0.1:1"}
    assert view["image_target"] == "flash" and view["python_version"] == "3.11"
    flat = {"resources": {"r": {"functions": [{"name": "f", "module": "m"}]}}}
    assert appmanifest.serving_view(flat) is flat


@pytest.mark.parametrize(
    ("image", "kind"),
    [
        ("runpod/queue:py3.11-latest", "sdk-cpu"),
        ("runpod/api:py3.12-dev", "sdk-cpu"),
        ("runpod/queue-gpu:py3.11-latest", "sdk-gpu"),
        ("runpod/task:py3.11-latest", "sdk-task"),
        ("runpod/task-gpu:py3.13-latest", "sdk-task"),
        ("runpod/queue:latest", "custom"),
        ("runpod/flash-cpu:py3.11-latest", "official-cpu"),
    ],
)
def test_the_2_0_runtime_images_are_kinds_of_their_own(image: str, kind: str) -> None:
    assert imageenvs.image_kind(image) == kind
    if kind.startswith("sdk"):
        assert imageenvs.recipe(kind).kind == kind


def test_process_workers_find_their_volume_where_runpod_mounts(tmp_path: Path) -> None:
    bindings = [
        {"kind": "network", "reference": "data", "id": "v1", "path": "/runpod-volume"},
        {"kind": "global", "reference": "g", "id": "g1", "path": "/other"},
    ]
    rebound = json.loads(rebind_mounts(json.dumps(bindings), str(tmp_path)))
    assert rebound[0]["path"] == str(tmp_path) and rebound[1]["path"] == "/other"
    assert rebind_mounts("{nope", "/x") == "{nope"  # left for the worker to report
    assert rebind_mounts('{"a": 1}', "/x") == '{"a": 1}'


def test_the_tls_front_certificate_covers_every_endpoint_name(tmp_path: Path) -> None:
    config = PlatformConfig(tmp_path, "http://127.0.0.1:18765", "k")
    cert, key = tls.ensure_certificates(config)
    assert config.tls_url == "https://flash.localhost:18766"
    assert (tls.tls_dir(config) / "key.pem").stat().st_mode & 0o777 == 0o600
    assert (tls.tls_dir(config) / "ca-key.pem").stat().st_mode & 0o777 == 0o600
    assert tls.ensure_certificates(config) == (cert, key)  # kept while valid
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["flash.localhost", "*.flash.localhost"]
    ca = x509.load_pem_x509_certificate((tls.tls_dir(config) / "ca.pem").read_bytes())
    leaf.verify_directly_issued_by(ca)  # raises unless the platform's CA signed it
    assert ca.public_bytes(serialization.Encoding.PEM) in tls.bundle_path(config).read_bytes()
    client = tls.client_environment(config)
    assert client["RUNPOD_ENDPOINT_BASE_URL"] == "https://flash.localhost:18766/v2"
    assert client["SSL_CERT_FILE"] == str(tls.bundle_path(config))
