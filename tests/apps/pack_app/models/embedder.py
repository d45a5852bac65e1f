"""A class endpoint in a directory without __init__.py (a namespace package)."""

from flash_runtime import Endpoint, GpuGroup


@Endpoint(name="embedder", gpu=[GpuGroup.ADA_24, GpuGroup.AMPERE_48], max_concurrency=4)
class Embedder:
    def __init__(self) -> None:
        self.dim = 3

    def embed(self, text: str) -> list[float]:
        return [float(len(text))] * self.dim

    async def embed_async(self, text: str) -> list[float]:
        return self.embed(text)

    def _private(self) -> None:
        pass
