"""A load-balanced endpoint; RELEASE marks which deploy of the app answers."""

from runpod_flash import Endpoint

RELEASE = "v1"

api = Endpoint(name="api", cpu="cpu3c-1-2", workers=(0, 1))


@api.post("/echo")
async def echo(text: str) -> dict:
    return {"echo": text, "release": RELEASE}


@api.get("/release")
async def release() -> dict:
    return {"release": RELEASE}
