"""A class endpoint with two methods; the instance is created once per worker."""

from runpod_flash import Endpoint


@Endpoint(name="qb-class", cpu="cpu3c-1-2")
class Text:
    created = 0

    def __init__(self) -> None:
        Text.created += 1
        self.calls = 0

    def upper(self, text: str) -> dict:
        self.calls += 1
        return {"text": text.upper(), "calls": self.calls, "instances": Text.created}

    async def lower(self, text: str) -> dict:
        self.calls += 1
        return {"text": text.lower(), "calls": self.calls, "instances": Text.created}
