"""The benchmark's JSON echo route."""

from runpod_flash import Endpoint

api = Endpoint(name="lb_echo", cpu="cpu5c-4-8", workers=1)


@api.post("/process")
async def process(input_data: dict) -> dict:
    return {"status": "success", "echo": input_data}
