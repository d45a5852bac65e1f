"""A route that calls a queue function on another endpoint: one request, followed across both.
The queue endpoint logs JSON lines (FLASH_LOG_FORMAT=json); the route's logs text."""

import logging

from runpod_flash import Endpoint

api = Endpoint(name="storefront", cpu="cpu3c-1-2")
log = logging.getLogger("shop")


@api.post("/order")
async def order(item: str) -> dict:
    log.info("ordering %s", item)
    packed = await pack(item)
    return {"order": item, "packed": packed}


@Endpoint(name="packer", cpu="cpu3c-1-2", env={"FLASH_LOG_FORMAT": "json"})
def pack(item: str) -> dict:
    logging.getLogger("packer").info("packing %s", item)
    print(f"boxed {item}")
    if item == "broken":
        raise ValueError("cannot pack a broken item")
    return {"box": item.upper()}
