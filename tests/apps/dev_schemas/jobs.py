"""A class endpoint for the OpenAPI generation of `flash run`."""

from runpod_flash import Endpoint


@Endpoint(name="jobs", cpu="cpu3c-1-2")
class Jobs:
    """Text jobs."""

    def upper(self, text: str) -> str:
        return text.upper()

    async def repeat(self, text: str, times: int = 2) -> list[str]:
        """Repeat a text."""
        return [text] * times
