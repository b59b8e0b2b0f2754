"""QIDO-RS (PS3.18 10.6): search studies, series and instances of the DICOM index.

Query parameters are attribute keywords or tags (``PatientName=张*``, ``00100010=...``),
matched with the gateway's C-FIND semantics (:mod:`services.pacs_gateway.matching`), so
DICOMweb and DIMSE always agree: single value, wildcard, date/time ranges, UID lists
(``,`` or ``\\`` separated), case-insensitive person names per component group.
``includefield`` adds attributes (or ``all``), ``limit``/``offset`` page, ``fuzzymatching``
is accepted and ignored.  Keys the index does not carry at the level are ignored with a
``Warning`` header, as PS3.18 8.3.4.6 asks.

:func:`parse_search` is free of I/O; :func:`search` reads the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword

from ...core.store.port import Store
from ...pacs_gateway import matching
from ...pacs_gateway import query as q
from ...pacs_gateway.matching import Matcher, MatchingError
from .access import Scope

RESERVED = frozenset({"includefield", "limit", "offset", "fuzzymatching"})
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10000

# Returned without includefield (PS3.18 Tables 10.6.3-3 to -5, as far as the index carries them).
DEFAULT_KEYWORDS = {
    "STUDY": q.PATIENT_ATTRIBUTES + q.STUDY_ATTRIBUTES + ("InstanceAvailability",),
    "SERIES": q.SERIES_ATTRIBUTES + ("StudyInstanceUID", "InstanceAvailability"),
    "IMAGE": q.IMAGE_ATTRIBUTES + ("StudyInstanceUID", "SeriesInstanceUID", "InstanceAvailability"),
}
COLLECTION = {"STUDY": "studies", "SERIES": "series", "IMAGE": "instances"}
SORT = {"STUDY": (("study_date", -1), ("study_time", -1), ("id", 1)),
        "SERIES": (("series_number", 1), ("id", 1)),
        "IMAGE": (("instance_number", 1), ("id", 1))}


class SearchError(ValueError):
    """A query the service cannot run: answered 400 with this message."""


@dataclass
class Search:
    level: str  # STUDY | SERIES | IMAGE
    matchers: list[tuple[str, Matcher]] = field(default_factory=list)
    keywords: list[str] = field(default_factory=list)  # returned attributes, in order
    include_all: bool = False
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    ignored: list[str] = field(default_factory=list)  # keys not supported, for the Warning header


def _keyword(key: str) -> str:
    """``PatientName`` or ``00100010`` -> keyword; SearchError for anything else."""
    if len(key) == 8 and all(c in "0123456789abcdefABCDEF" for c in key):
        keyword = keyword_for_tag(int(key, 16))
        if keyword:
            return keyword
        raise SearchError(f"unknown attribute tag {key}")
    if tag_for_keyword(key) is not None:
        return key
    raise SearchError(f"unknown query parameter {key!r} (not a DICOM keyword or tag)")


def _int(params: Mapping[str, str], name: str, default: int, high: int) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SearchError(f"{name} must be an integer, got {raw!r}") from None
    if value < 0:
        raise SearchError(f"{name} must not be negative")
    return min(value, high)


def parse_search(level: str, params: Iterable[tuple[str, str]], fixed: Mapping[str, str] | None = None) -> Search:
    """Parse a QIDO query (``params`` as ordered pairs; ``fixed``: the UIDs in the path)."""
    pairs = list(params)
    single = {k: v for k, v in pairs}
    search = Search(level, limit=_int(single, "limit", DEFAULT_LIMIT, MAX_LIMIT),
                    offset=_int(single, "offset", 0, 10**9))
    known = q.attributes_at(level)
    values: dict[str, list[str]] = {}
    includes: list[str] = []
    for key, value in pairs:
        if key == "includefield":
            includes.extend(v.strip() for v in value.split(",") if v.strip())
            continue
        if key in RESERVED:
            continue
        if "." in key:  # sequence paths: no sequence matching (as C-FIND)
            search.ignored.append(key)
            continue
        values.setdefault(_keyword(key), []).append(value)
    for keyword, value in (fixed or {}).items():
        values[keyword] = [value]
    for keyword, given in values.items():
        if keyword not in known:
            search.ignored.append(keyword)
            continue
        vr = dictionary_VR(tag_for_keyword(keyword))
        text = "\\".join(given)
        if vr == "UI":
            text = text.replace(",", "\\")  # PS3.18 8.3.4.1: UID lists may be comma separated
        try:
            matcher = matching.parse(vr, text)
        except MatchingError as exc:
            raise SearchError(f"{keyword}: {exc}") from None
        if matcher.kind != "universal":
            search.matchers.append((keyword, matcher))
    keywords = list(DEFAULT_KEYWORDS[level])
    for include in includes:
        if include.lower() == "all":
            search.include_all = True
            continue
        try:
            keywords.append(_keyword(include))
        except SearchError:
            search.ignored.append(include)  # a viewer asking for a private tag still gets its results
    keywords.extend(k for k, _ in search.matchers)
    search.keywords = list(dict.fromkeys(k for k in keywords if k in known or k == "InstanceAvailability"))
    if search.include_all:
        search.keywords = list(dict.fromkeys([*search.keywords, *sorted(known - set(q.PATIENT_COUNTS))]))
    return search


def _store_filter(search: Search, scope: Scope) -> dict[str, Any]:
    collection = COLLECTION[search.level]
    where = dict(scope.filter(collection))
    fields = q.STORE_FIELDS[collection]
    for keyword, matcher in search.matchers:
        name = fields.get(keyword)
        condition = matcher.store_condition() if name else None
        if condition is not None and name not in where:  # the scope's own condition stays; Python re-checks
            where[name] = condition
    return where


async def _by_id(store: Store, collection: str, ids: Iterable[Any]) -> dict[str, Any]:
    wanted = sorted({i for i in ids if i})
    if not wanted:
        return {}
    return {d["id"]: d for d in await store.find(collection, {"id": {"$in": wanted}})}


async def search(store: Store, search: Search, scope: Scope) -> list[dict[str, Any]]:
    """Records (keyword -> value) of the visible entities matching ``search``, one page of them."""
    level = search.level
    docs = await store.find(COLLECTION[level], _store_filter(search, scope), sort=SORT[level])
    if level == "STUDY":
        records = [q.study_record(d) for d in docs]
    else:
        studies = await _by_id(store, "studies", (d.get("study_uid") for d in docs))
        series = await _by_id(store, "series", (d.get("series_uid") for d in docs)) if level == "IMAGE" else {}
        records = []
        for d in docs:
            study = studies.get(d.get("study_uid"))
            if study is None or not scope.allows(study):
                continue  # index mid-write, or out of scope
            record = q.study_record(study)
            if level == "SERIES":
                record |= q.series_record(d)
            elif d.get("series_uid") in series:
                record |= q.series_record(series[d["series_uid"]]) | q.instance_record(d)
            else:
                continue
            records.append(record)
    matched = [r for r in records if matching.matches_all(search.matchers, r)]
    for r in matched:
        r["InstanceAvailability"] = "ONLINE"
    return matched[search.offset:search.offset + search.limit]


def retrieve_url(base: str, record: dict[str, Any], level: str) -> str:
    url = f"{base}/studies/{record['StudyInstanceUID']}"
    if level in ("SERIES", "IMAGE"):
        url += f"/series/{record['SeriesInstanceUID']}"
    if level == "IMAGE":
        url += f"/instances/{record['SOPInstanceUID']}"
    return url
