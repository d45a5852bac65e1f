"""Typed routes: arguments from the JSON body, the query string and the path."""

from runpod_flash import Endpoint

api = Endpoint(name="lb_typed", cpu="cpu5c-4-8", workers=1)


@api.post("/add")
async def add(a: int, b: int) -> dict:
    return {"sum": a + b}


@api.post("/multiply")
def multiply(a: float, b: float = 2.0) -> float:
    return a * b


@api.get("/items/{item_id}")
async def get_item(item_id: int, q: str | None = None, limit: int = 10) -> dict:
    return {"item_id": item_id, "q": q, "limit": limit}


@api.get("/search")
def search(tag: list[str], exact: bool = False) -> dict:
    return {"tag": tag, "exact": exact}


@api.put("/items/{item_id}")
async def put_item(item_id: int, name: str, price: float) -> dict:
    return {"item_id": item_id, "name": name, "price": price}


@api.patch("/items/{item_id}")
async def patch_item(item_id: int, name: str | None = None) -> dict:
    return {"item_id": item_id, "patched": {"name": name} if name is not None else {}}


@api.delete("/items/{item_id}")
async def delete_item(item_id: int) -> None:
    return None
