"""Pydantic models as parameter and return types, the FastAPI way: validated, real instances,
a lone model argument taking the whole body, models returned as JSON."""

from pydantic import BaseModel, Field

from runpod_flash import Endpoint


class Item(BaseModel):
    name: str
    price: float = Field(gt=0)
    tags: list[str] = []


class Quote(BaseModel):
    item: Item
    total: float


api = Endpoint(name="models-api", cpu="cpu3c-1-2", workers=(0, 1))


@api.post("/items")
def create(item: Item) -> Item:
    assert isinstance(item, Item)  # a real instance, not a dict
    return item.model_copy(update={"name": item.name.title()})


@api.put("/items/{item_id}")
def update(item_id: int, item: Item) -> dict:
    return {"id": item_id, "item": item, "kind": type(item).__name__}


@api.post("/orders")
def order(customer: str, items: list[Item]) -> Quote:
    return Quote(item=items[0], total=sum(i.price for i in items))


@Endpoint(name="models-quote", cpu="cpu3c-1-2", workers=(0, 1))
def quote(item: Item) -> Quote:
    return Quote(item=item, total=round(item.price * 1.2, 2))
