"""Handling one event for a consumer group: validate, retry with backoff, dead-letter.

Shared by every bus adapter so they fail the same way.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Awaitable, Callable

from ..events import Event, InvalidEvent, utc_now
from .port import RetryPolicy, Subscription

log = logging.getLogger("yilian.bus")

DeadLetter = Callable[[dict], Awaitable[None]]


async def handle(sub: Subscription, event: Event, *, validate: Callable[[Event], None],
                 retry: RetryPolicy, dead_letter: DeadLetter) -> bool:
    """Run ``sub.handler`` on ``event``; True if handled, False if dead-lettered.

    Either way the caller acknowledges the event: it has been dealt with for good.
    """
    try:
        validate(event)
    except InvalidEvent as exc:
        log.error("event failed its schema on consume", extra={
            "group": sub.group, "event_id": event.id, "event_type": event.type, "reason": str(exc)})
        await dead_letter(_letter(sub, event, f"invalid: {exc}", attempts=0))
        return False
    attempt = 0
    while True:
        attempt += 1
        try:
            await sub.handler(event)
            return True
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a handler's failure must not stop the group
            if attempt >= retry.max_attempts:
                log.error("handler failed, event dead-lettered", extra={
                    "group": sub.group, "event_id": event.id, "event_type": event.type,
                    "attempts": attempt, "reason": repr(exc)})
                await dead_letter(_letter(sub, event, f"handler failed: {exc!r}", attempts=attempt,
                                          trace=traceback.format_exc(limit=8)))
                return False
            delay = retry.backoff(attempt)
            log.warning("handler failed, retrying", extra={
                "group": sub.group, "event_id": event.id, "event_type": event.type,
                "attempt": attempt, "retry_in_s": delay, "reason": repr(exc)})
            await asyncio.sleep(delay)


def _letter(sub: Subscription, event: Event, reason: str, *, attempts: int, trace: str = "") -> dict:
    return {"id": f"{sub.group}|{event.id}", "group": sub.group, "type": event.type,
            "subject": event.subject, "reason": reason, "attempts": attempts, "trace": trace,
            "time": utc_now(), "envelope": event.to_dict()}
