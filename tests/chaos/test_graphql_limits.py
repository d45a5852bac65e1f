"""F10: the control plane refuses documents that ask too much (aliases, depth, fields, body
size) at once with a 400/413 and keeps answering; names like `.`, `..` or `-rf` are refused."""

from __future__ import annotations

import http.client
import time

import pytest
from graphql import parse
from support import ControlPlaneServer

from flash_runtime.platform.controlplane import MAX_BODY_BYTES, _cost
from flash_runtime.protocol import operations
from flash_runtime.protocol.controlplane import GraphQLRequestError
from flash_runtime.protocol.wire import bearer
from flash_runtime.testing.net import call


def post(cp: ControlPlaneServer, query: str) -> tuple[int, float, object]:
    started = time.perf_counter()
    status, body = call(
        "POST", f"{cp.config.url}/graphql", {"query": query}, headers=bearer(cp.config.api_key)
    )
    return status, time.perf_counter() - started, body


def test_expensive_documents_are_refused_at_once(control_plane: ControlPlaneServer) -> None:
    cp = control_plane
    aliases = "{ " + " ".join(f"a{i}: myself {{ id }}" for i in range(15_000)) + " }"
    deep = (
        "{ myself { flashApps { flashEnvironments { endpoints { template { env { key } } } } } } }"
    )
    fragment = (
        "query q { myself { ...f ...f } } fragment f on User { flashApps { id name createdAt } }"
    )
    figures = {}
    for name, query in {"15,000 aliases": aliases, "fragment reuse": fragment}.items():
        status, seconds, body = post(cp, query)
        figures[name] = (status, round(seconds, 3))
        assert status == (400 if name == "15,000 aliases" else 200), body
    print(
        f"\n15,000 aliases: HTTP {figures['15,000 aliases'][0]} in {figures['15,000 aliases'][1]}s"
    )
    assert post(cp, deep)[0] == 200  # a real query of depth 7 is fine
    too_deep = "{ myself " + "{ flashApps " * 3 + "{ id }" + " }" * 3 + " }"
    assert _cost(parse(too_deep)) is None
    nested = (
        "{ myself { flashApps { flashEnvironments { endpoints { template { env { key } } } } } } }"
    )
    assert _cost(parse(nested)) is None
    status, _, body = post(cp, "{ myself { id } }")
    assert status == 200, body  # still answering

    # A body declared larger than the limit is refused before it is read.
    host, port = cp.config.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/graphql")
    conn.putheader("Authorization", f"Bearer {cp.config.api_key}")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()


def test_the_limits_leave_room_for_every_document_we_send() -> None:
    for name, document in operations.ALL.items():
        assert _cost(parse(document)) is None, name


@pytest.mark.parametrize("name", [".", "..", "-rf", "_x", " ", "a/b", "x" * 65])
def test_names_that_could_be_paths_or_flags_are_refused(
    control_plane: ControlPlaneServer, name: str
) -> None:
    with pytest.raises(GraphQLRequestError, match="invalid app name"):
        control_plane.call(lambda c: c.create_app(name))
