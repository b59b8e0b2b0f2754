"""Request bodies and query parameters, checked against ``schemas/openapi.yaml``.

The OpenAPI document is the single source of truth: each operation's ``requestBody``
schema (OpenAPI 3.1 = JSON Schema 2020-12) validates the body of the matching route, and
every violation is reported with the field it concerns and why.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from .problems import Problem

SPEC_PATH = Path(__file__).resolve().parents[2] / "schemas" / "openapi.yaml"
SPEC_URI = "urn:yilian:openapi"
MAX_JSON_BYTES = 256 * 1024  # reports are text; anything larger is a mistake or an attack
MAX_JSON_DEPTH = 32  # no body nests deeper than 3; a deep one would exhaust the validator's recursion


# libyaml where PyYAML has it: the 200 KB spec in ~0.4 s instead of ~2 s, paid by every api process at
# its first JSON body (the same data: tests/api/test_openapi_contract.py)
_SAFE_LOADER = yaml.CSafeLoader if getattr(yaml, "__with_libyaml__", False) else yaml.SafeLoader


@lru_cache(maxsize=1)
def spec() -> dict[str, Any]:
    return yaml.load(SPEC_PATH.read_text("utf-8"), Loader=_SAFE_LOADER)  # noqa: S506 - a SafeLoader


@lru_cache(maxsize=1)
def _registry() -> Registry:
    return Registry().with_resource(SPEC_URI, Resource.from_contents(spec(), default_specification=DRAFT202012))


@lru_cache(maxsize=None)
def body_validator(method: str, path: str) -> tuple[Draft202012Validator, bool] | None:
    """The validator of ``method path``'s JSON body and whether the body is required."""
    operation = spec()["paths"].get(path, {}).get(method.lower())
    if operation is None or "requestBody" not in operation:
        return None
    body = operation["requestBody"]
    schema = body["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = {"$ref": SPEC_URI + schema["$ref"]}
    return Draft202012Validator(schema, registry=_registry(),
                                format_checker=Draft202012Validator.FORMAT_CHECKER), bool(body.get("required"))


def _pointer(path: Any) -> str:
    return "/" + "/".join(str(p) for p in path) if path else "(body)"


def describe(error: Any) -> dict[str, str]:
    """One schema violation as ``{"field": "/priority", "message": "..."}``."""
    field = _pointer(error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        return {"field": field, "message": f"unknown field(s) {', '.join(map(repr, extra))} are not allowed"}
    if error.validator == "required":
        return {"field": field, "message": error.message.replace(" is a required property", " is required")}
    return {"field": field, "message": error.message}


def check(validator: Draft202012Validator, data: Any) -> None:
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    if errors:
        described = [describe(e) for e in errors]
        detail = "; ".join(f"{d['field']}: {d['message']}" for d in described)
        raise Problem(422, detail, slug="invalid-body", errors=described)


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON body, validated against its operation's schema.

    Malformed or too deeply nested JSON -> 400; too large -> 413; not JSON -> 415; schema violations
    (including unknown fields) -> 422.
    """
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else request.path
    found = body_validator(request.method, path)
    if found is None:
        raise Problem(500, f"no request body schema for {request.method} {path} in openapi.yaml")
    validator, required = found
    if request.content_length is not None and request.content_length > MAX_JSON_BYTES:
        raise Problem(413, f"request body of {request.content_length} bytes exceeds {MAX_JSON_BYTES} bytes")
    raw = await _read_limited(request)
    if not raw.strip():
        if required:
            raise Problem(400, "a JSON request body is required", slug="malformed-json")
        data: Any = {}
    else:
        ctype = request.content_type
        if ctype != "application/json" and not ctype.endswith("+json"):
            raise Problem(415, f"Content-Type must be application/json, not {ctype!r}")
        try:
            data = json.loads(raw.decode("utf-8"))
        except ValueError as exc:  # not UTF-8, not JSON, or an integer of more than 4300 digits
            raise Problem(400, f"malformed JSON: {exc}", slug="malformed-json") from None
        except RecursionError:  # deeper than Python's own parser goes
            raise too_deep() from None
        if depth(data) > MAX_JSON_DEPTH:
            raise too_deep()
    check(validator, data)
    return data


def too_deep() -> Problem:
    return Problem(400, f"malformed JSON: nested deeper than {MAX_JSON_DEPTH} levels", slug="malformed-json")


def depth(value: Any) -> int:
    """How deeply arrays and objects nest (iteratively: the value may be arbitrarily deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level > MAX_JSON_DEPTH:
                break
            stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


async def _read_limited(request: web.Request) -> bytes:
    """The whole body, refusing (413) as soon as it passes the limit (chunked bodies have no length)."""
    chunks, size = [], 0
    while chunk := await request.content.read(64 * 1024):
        size += len(chunk)
        if size > MAX_JSON_BYTES:
            raise Problem(413, f"request body exceeds {MAX_JSON_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


# --- query parameters ---------------------------------------------------------------------

def query_choice(request: web.Request, name: str, choices: tuple[str, ...] | None = None) -> str | None:
    value = request.query.get(name)
    if value is None or value == "":
        return None
    if choices is not None and value not in choices:
        raise Problem(422, f"query parameter {name!r} must be one of {', '.join(choices)}, not {value!r}",
                      slug="invalid-query")
    return value


def query_int(request: web.Request, name: str, default: int, lo: int, hi: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Problem(422, f"query parameter {name!r} must be an integer, not {raw!r}",
                      slug="invalid-query") from None
    if not lo <= value <= hi:
        raise Problem(422, f"query parameter {name!r} must be between {lo} and {hi}, not {value}",
                      slug="invalid-query")
    return value


def known_query(request: web.Request, allowed: tuple[str, ...]) -> None:
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        raise Problem(422, f"unknown query parameter(s) {', '.join(map(repr, unknown))} "
                           f"(allowed: {', '.join(allowed) or 'none'})", slug="invalid-query")


def query_instant(request: web.Request, name: str) -> str | None:
    """An ISO 8601 instant query parameter, normalised to the stored ``...Z`` form so strings compare."""
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise Problem(422, f"query parameter {name!r} must be an ISO 8601 date-time, not {raw!r}",
                      slug="invalid-query") from None
    if moment.tzinfo is None:
        raise Problem(422, f"query parameter {name!r} needs a time zone (e.g. 2026-11-23T10:00:00Z)",
                      slug="invalid-query")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
