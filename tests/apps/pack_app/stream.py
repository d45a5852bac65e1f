from runpod_flash import CpuInstanceType, Endpoint


@Endpoint(
    name="counter", cpu=CpuInstanceType.CPU3C_2_4, scaler_type="REQUEST_COUNT", scaler_value=2
)
def count(n: int = 3):
    yield from range(n)
