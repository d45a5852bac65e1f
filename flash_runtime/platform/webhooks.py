"""Job webhooks: a finished job's payload POSTed to the URL it was submitted with, in the
background, three attempts with backoff (1 s, 2 s), as Runpod retries them."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import orjson

log = logging.getLogger("flash_runtime.platform")

ATTEMPTS = 3


async def deliver(session: aiohttp.ClientSession, url: str, payload: dict[str, Any]) -> bool:
    """POST ``payload`` to ``url`` until it answers below 400; False after the last attempt."""
    body = orjson.dumps(payload)
    for attempt in range(ATTEMPTS):
        try:
            async with session.post(
                url,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as resp:
                if resp.status < 400:
                    return True
        except (aiohttp.ClientError, TimeoutError):
            pass
        if attempt + 1 < ATTEMPTS:
            await asyncio.sleep(2**attempt)
    log.warning("webhook %s for job %s failed after %d attempts", url, payload.get("id"), ATTEMPTS)
    return False
