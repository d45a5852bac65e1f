"""Routes returning a Starlette Response and raw bytes."""

from starlette.responses import PlainTextResponse

from runpod_flash import Endpoint

api = Endpoint(name="lb_responses", cpu="cpu5c-4-8", workers=1)


@api.get("/teapot")
async def teapot() -> PlainTextResponse:
    return PlainTextResponse("short and stout", status_code=418, headers={"x-brewed": "yes"})


@api.get("/blob")
def blob(size: int = 4) -> bytes:
    return bytes(range(size))
