"""runpod-flash's older spelling: @remote with resource configurations, and a PodTemplate."""

from runpod_flash import (
    CpuLiveLoadBalancer,
    LiveServerless,
    PodTemplate,
    ServerlessScalerType,
    remote,
)

gpu = LiveServerless(
    name="legacy-gpu",
    workersMax=2,
    scalerType=ServerlessScalerType.REQUEST_COUNT,
    template=PodTemplate(containerDiskInGb=30, env=[{"key": "MODE", "value": "legacy"}]),
)
api = CpuLiveLoadBalancer(name="legacy-api", workersMin=0, workersMax=1)


@remote(resource_config=gpu, dependencies=["requests"])
def shout(text: str) -> str:
    return text.upper() + "!"


@remote(resource_config=api, method="POST", path="/shout")
async def shout_route(text: str) -> dict:
    return {"shouted": await shout(text)}


@remote(resource_config=api, method="GET", path="/ping-me")
def ping_me() -> dict:
    return {"pong": True}
