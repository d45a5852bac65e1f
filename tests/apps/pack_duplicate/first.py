from runpod_flash import Endpoint


@Endpoint(name="inference", gpu="AMPERE_16")
def preprocess(data: dict) -> dict:
    return data
