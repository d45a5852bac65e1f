from runpod_flash import Endpoint


@Endpoint(name="inference", gpu="AMPERE_16")
def run_model(data: dict) -> dict:
    return data
