"""A route that raises, next to one that works."""

from runpod_flash import Endpoint

api = Endpoint(name="lb_crash", cpu="cpu5c-4-8", workers=1)


@api.post("/crash")
async def crash(reason: str = "boom") -> dict:
    raise ValueError(reason)


@api.get("/ok")
def ok() -> dict:
    return {"ok": True}
