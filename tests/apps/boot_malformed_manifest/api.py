"""Served by a manifest whose workersMax has the wrong type (the fixture is the manifest)."""

from runpod_flash import Endpoint

api = Endpoint(name="api", cpu="cpu3c-1-2")


@api.get("/hello")
def hello() -> str:
    return "hello"
