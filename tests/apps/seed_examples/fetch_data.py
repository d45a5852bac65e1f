# Seed 002, "Import errors in endpoint functions": heavy imports live inside the function.
from runpod_flash import Endpoint, GpuGroup


@Endpoint(name="fetch-data", gpu=GpuGroup.ANY, dependencies=["requests"])
def fetch_data(url):
    import requests  # Import here
    return requests.get(url).json()
