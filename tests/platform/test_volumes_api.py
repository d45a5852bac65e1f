"""Runpod's REST ``/v1/networkvolumes`` on the local platform: strict as Runpod is (the key,
the body's fields), and an endpoint cannot attach a volume that does not exist."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import request

from flash_runtime.testing.platform import InProcessPlatform


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessPlatform]:
    with InProcessPlatform(tmp_path_factory.mktemp("home")) as p:
        yield p


def test_volumes_are_created_listed_and_deleted(platform: InProcessPlatform) -> None:
    url, key = f"{platform.url}/v1/networkvolumes", platform.config.api_key
    status, made = request(
        "POST", url, key, {"name": "models", "size": 50, "dataCenterId": "US-KS-2"}
    )
    assert status == 200 and made["name"] == "models" and made["size"] == 50, made
    assert request("GET", url, key) == (200, [made])
    assert request("GET", f"{url}/{made['id']}", key) == (200, made)
    assert request("DELETE", f"{url}/{made['id']}", key)[0] == 200
    assert request("GET", f"{url}/{made['id']}", key)[0] == 404


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"size": 10, "dataCenterId": "EU-RO-1"}, "name"),
        ({"name": " ", "size": 10, "dataCenterId": "EU-RO-1"}, "name"),
        ({"name": "x", "size": 5, "dataCenterId": "EU-RO-1"}, "size"),
        ({"name": "x", "size": True, "dataCenterId": "EU-RO-1"}, "size"),
        ({"name": "x", "size": 10, "dataCenterId": "MOON-1"}, "dataCenterId"),
        ({"name": "x", "size": 10, "dataCenterId": "EU-RO-1", "extra": 1}, "extra"),
        ([1, 2], "JSON object"),
    ],
)
def test_bad_volumes_are_refused(platform: InProcessPlatform, body: object, message: str) -> None:
    url, key = f"{platform.url}/v1/networkvolumes", platform.config.api_key
    status, reply = request("POST", url, key, body)  # type: ignore[arg-type]
    assert status == 400 and message in str(reply), reply
    assert request("GET", url, key) == (200, [])  # nothing was made


def test_the_key_is_required(platform: InProcessPlatform, tmp_path: Path) -> None:
    url = f"{platform.url}/v1/networkvolumes"
    assert request("GET", url, "wrong")[0] == 401
    assert request("POST", url, "", {"name": "x", "size": 10, "dataCenterId": "EU-RO-1"})[0] == 401
