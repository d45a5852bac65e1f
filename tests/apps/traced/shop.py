"""A route that calls a queue function and a route on two other endpoints: one request,
followed across all three. The queue endpoint logs JSON lines (FLASH_LOG_FORMAT=json)."""

import logging

from runpod_flash import Endpoint

api = Endpoint(name="storefront", cpu="cpu3c-1-2")
pricing = Endpoint(name="pricing", cpu="cpu3c-1-2")
log = logging.getLogger("shop")


@api.post("/order")
async def order(item: str) -> dict:
    log.info("ordering %s", item)
    packed = await pack(item)
    cost = await price(item)
    return {"order": item, "packed": packed, "price": cost}


@pricing.post("/price")
async def price(item: str) -> float:
    log.info("pricing %s", item)
    return float(len(item))


@Endpoint(name="packer", cpu="cpu3c-1-2", env={"FLASH_LOG_FORMAT": "json"})
def pack(item: str) -> dict:
    logging.getLogger("packer").info("packing %s", item)
    print(f"boxed {item}")
    if item == "broken":
        raise ValueError("cannot pack a broken item")
    return {"box": item.upper()}
