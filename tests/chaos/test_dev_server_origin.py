"""F11: the dev server (which adds the platform key to what it forwards) answers this machine
only: a cross-site request (foreign Origin) or a DNS-rebound one (foreign Host) is refused
before the app sees it. ``tests/e2e/test_devserver.py`` checks the same on a real `flash run`."""

from __future__ import annotations

import asyncio

import aiohttp
from starlette.types import Receive, Scope, Send

from flash_runtime.devserver.app import local_only
from flash_runtime.platform.transport import Listener


async def forwarded(scope: Scope, receive: Receive, send: Send) -> None:
    """Stands for the dev server's forwarding: reaching it is what must not happen."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"forwarded with the key"})


def test_other_sites_and_other_hosts_are_refused() -> None:
    async def run() -> dict[str, int]:
        listener = Listener(local_only(forwarded), "127.0.0.1", 0)
        base = f"http://127.0.0.1:{listener.port}"
        cases = {
            "cross-site form post": {"Origin": "http://evil.example", "Content-Type": "text/plain"},
            "dns rebinding": {"Host": f"evil.example:{listener.port}"},
            "opaque origin": {"Origin": "null"},
            "same site": {"Origin": f"http://localhost:{listener.port}"},
            "curl": {},
        }
        codes = {}
        try:
            async with aiohttp.ClientSession() as session:
                for name, headers in cases.items():
                    async with session.post(
                        f"{base}/lb_worker/process", headers=headers, data=b"x"
                    ) as r:
                        codes[name] = r.status
        finally:
            await listener.close()
        return codes

    assert asyncio.run(run()) == {
        "cross-site form post": 403,
        "dns rebinding": 403,
        "opaque origin": 403,
        "same site": 200,
        "curl": 200,
    }
