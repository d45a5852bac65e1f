"""A load-balanced endpoint for the `flash run` tests; VERSION marks which build answers."""

from runpod_flash import Endpoint

VERSION = "v1"

api = Endpoint(name="lb_worker", cpu="cpu3c-1-2", workers=(0, 1))


@api.post("/process")
async def process(text: str, count: int = 1, tags: list[str] | None = None) -> dict:
    """Process a text.

    Echoes it back with the version of the code that served it.
    """
    print(f"processing {text!r}")
    return {"text": text, "count": count, "tags": tags or [], "version": VERSION}


@api.get("/items/{item_id}")
async def get_item(item_id: int, verbose: bool = False) -> dict:
    """Fetch one item."""
    return {"item_id": item_id, "verbose": verbose, "version": VERSION}


@api.get("/count")
def count(to: int = 3):
    """Stream the numbers up to `to`."""
    for i in range(1, to + 1):
        yield {"n": i}
