"""A Runpod SDK 2.0 queue app with a network volume: a ledger kept on the volume, a job that
fails on its first run (for /retry), and a release marker (for a redeploy)."""

import runpod
from runpod import App

RELEASE = "v1"
app = App("sdk2-ledger")
data = runpod.NetworkVolume("sdk2-data", datacenter="EU-RO-1")


@app.queue(name="ledger", cpu="cpu3c-2-4", workers=(0, 1), mounts={"/runpod-volume": data})
def ledger(entry: str, fail_once: bool = False):
    marker = data.path / f"failed-{entry}"
    if fail_once and not marker.exists():
        marker.write_text("1")
        raise RuntimeError(f"first try of {entry} fails")
    book = data.path / "ledger.txt"
    with book.open("a") as out:
        out.write(entry + "\n")
    return {"lines": book.read_text().splitlines(), "release": RELEASE}


@runpod.local_entrypoint
def main():
    print("ENTRYPOINT", ledger.remote("dev"))
