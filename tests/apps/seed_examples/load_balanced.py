# Seed 000/002, "Load-balancing example": one endpoint, several routes.
from runpod_flash import Endpoint

# One endpoint can host multiple HTTP routes
api = Endpoint(name="api-server", cpu="cpu5c-4-8", workers=(1, 5))

@api.post("/generate")
def generate_text(prompt: str): ...

@api.post("/translate")
def translate_text(text: str): ...

@api.get("/health")
def health_check(): ...
