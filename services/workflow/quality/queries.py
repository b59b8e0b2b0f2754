"""Read side of image quality and peer review; scope is the caller's (the API passes it)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from ...core.consortium import Consortium
from ...core.localtime import LocalTime
from ...core.store.port import Store
from ...core.times import iso
from . import model
from .service import GRADINGS, REVIEWS, sees_review

MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
Doc = dict[str, Any]


def month_start(month: str, local: LocalTime) -> str:
    """The UTC instant a local month (``2026-12``) begins."""
    year, number = map(int, month.split("-"))
    return iso(datetime(year, number, 1, tzinfo=local.tz).timestamp())


def next_month(month: str) -> str:
    year, number = map(int, month.split("-"))
    return f"{year + number // 12}-{number % 12 + 1:02d}"


async def gradings(store: Store, local: LocalTime, *, organization: str | None = None, modality: str | None = None,
                   operator: str | None = None, since: str | None = None, until: str | None = None) -> list[Doc]:
    """The latest grading of each reading, local months ``since``..``until`` (both included)."""
    where: dict[str, Any] = {}
    if organization:
        where["organization"] = organization
    span: dict[str, str] = {}
    if since:
        span["$gte"] = month_start(since, local)
    if until:
        span["$lt"] = month_start(next_month(until), local)
    if span:
        where["graded_at"] = span
    found = await store.find(GRADINGS, where, sort=(("graded_at", 1),))
    return [g for g in found if (not modality or g.get("modality") == modality)
            and (not operator or operator in (g.get("operators") or []))]


def rates(consortium: Consortium, local: LocalTime, found: list[Doc]) -> list[Doc]:
    scale = consortium.quality.scale
    return model.grading_rates(found, {g.code for g in scale if g.reject}, scale[0].code,
                               lambda at: local.local(at).strftime("%Y-%m"))


async def reviews(store: Store, consortium: Consortium, actor, *, state: str | None = None) -> list[Doc]:
    where = {"state": state} if state else {}
    found = await store.find(REVIEWS, where, sort=(("sampled_at", 1),))
    return [r for r in found if sees_review(consortium, actor, r)]


async def review_stats(store: Store, consortium: Consortium, actor) -> Doc:
    """Per reader and per centre; a reader sees only his own figures, a coordinator his centre's."""
    found = await store.find(REVIEWS, {}, sort=(("sampled_at", 1),))
    if actor.role == "reader":
        found = [r for r in found if r["original_reader"] == actor.user_id]
    elif actor.role == "coordinator":
        found = [r for r in found if r["original_centre"] == actor.centre]
    return {"readers": model.review_stats(found, "original_reader"),
            "centres": [] if actor.role == "reader" else model.review_stats(found, "original_centre")}
