from runpod_flash import Endpoint


@Endpoint(name="fetch", cpu="cpu3c-1-2", dependencies=["requests"])
def fetch(url: str) -> int:
    import requests  # inside the function, as the documentation says

    return requests.get(url, timeout=10).status_code
