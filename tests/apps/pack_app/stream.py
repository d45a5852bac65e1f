from runpod_flash import CpuInstanceType, Endpoint


@Endpoint(
    name="counter", cpu=CpuInstanceType.CPU3C_2_4, scaler_type="REQUEST_COUNT", scaler_value=2
)
def count(n: int = 3):
    yield from range(n)


if __name__ == "__main__":  # a script's use: no worker runs it, so the endpoint needs no key
    import asyncio

    from gpu_worker import gpu_hello

    print(asyncio.run(gpu_hello("from a script")))
