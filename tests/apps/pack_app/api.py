"""Load-balanced CPU endpoint; one route calls the GPU endpoint (a cross-endpoint call)."""

from gpu_worker import gpu_hello

from runpod_flash import Endpoint

api = Endpoint(name="api", cpu="cpu5c-4-8", workers=(1, 5), datacenter="EU-RO-1")


@api.post("/generate")
async def generate(prompt: str) -> dict:
    return await gpu_hello(prompt)


@api.get("/items/{item_id}")
def get_item(item_id: int) -> dict:
    return {"id": item_id}


@api.get("/stream")
async def stream_numbers(n: int = 3):
    for i in range(n):
        yield {"i": i}
