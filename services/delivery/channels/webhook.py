"""The webhook channel: POST the result document to the clinic's HIS, signed with HMAC-SHA256.

Headers: ``X-Yilian-Delivery-Id``; ``Idempotency-Key`` (the same on every retry, so the
receiver applies it once); ``X-Yilian-Timestamp`` (Unix seconds of this attempt);
``X-Yilian-Signature: sha256=<hex HMAC-SHA256 of the raw body with the shared secret>``.
A 2xx answer is delivered; anything else, or no answer in time, is retried.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from typing import Any

import aiohttp

from . import Outcome


def sign(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def body_of(document: dict[str, Any]) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


async def post(session: aiohttp.ClientSession, *, url: str, document: dict[str, Any], delivery_id: str,
               idempotency_key: str, secret: str, timeout: float) -> Outcome:
    body = body_of(document)
    headers = {"Content-Type": "application/json; charset=utf-8", "X-Yilian-Delivery-Id": delivery_id,
               "Idempotency-Key": idempotency_key, "X-Yilian-Timestamp": str(int(time.time())),
               "X-Yilian-Signature": sign(body, secret), "User-Agent": "Yilian-Delivery/1"}
    try:
        async with session.post(url, data=body, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            await resp.read()
            if 200 <= resp.status < 300:
                return Outcome(True, f"{url} answered {resp.status}")
            return Outcome(False, f"{url} answered {resp.status}")
    except asyncio.TimeoutError:
        return Outcome(False, f"{url} did not answer within {timeout:g}s")
    except aiohttp.ClientError as exc:
        return Outcome(False, f"{url}: {type(exc).__name__}: {exc}")
