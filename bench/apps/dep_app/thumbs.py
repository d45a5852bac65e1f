"""An app with real dependencies for the packing benchmark: Pillow (a binary wheel) and requests
(several small pure-Python ones). Neither packer leaves them out."""

from runpod_flash import Endpoint


@Endpoint(name="thumbs", cpu="cpu3c-1-2", dependencies=["pillow", "requests"])
def thumbnail(url: str, size: int = 128) -> dict:
    import io

    import requests
    from PIL import Image

    image = Image.open(io.BytesIO(requests.get(url, timeout=30).content))
    image.thumbnail((size, size))
    return {"width": image.width, "height": image.height, "mode": image.mode}
