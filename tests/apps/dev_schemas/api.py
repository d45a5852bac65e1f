"""Routes whose signatures exercise the OpenAPI generation of `flash run`."""

from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import PlainTextResponse

from runpod_flash import Endpoint

api = Endpoint(name="api", cpu="cpu3c-1-2")


@dataclass
class Order:
    sku: str
    quantity: int = 1


@api.post("/orders/{shop_id}")
async def place(shop_id: int, order: Order, request: Request, note: str = "") -> dict[str, int]:
    """Place an order."""
    return {"shop": shop_id}


@api.post("/anything")
async def anything(**fields: object) -> dict:
    return dict(fields)


@api.get("/text")
async def text() -> PlainTextResponse:
    return PlainTextResponse("hi")


@api.get("/stream")
async def stream(n: int = 2):
    for i in range(n):
        yield i
