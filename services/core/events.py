"""Events: the CloudEvents 1.0 envelope and the JSON Schema registry.

Every event Yilian publishes or consumes is an :class:`Event`.  Its ``type`` is a
short dotted name (``instance.stored``); its ``dataschema`` names the schema file
``schemas/events/<type>.v<version>.json`` that its ``data`` must satisfy.  Both the
bus (on publish and on consume) and the outbox validate through :class:`SchemaRegistry`.
"""

from __future__ import annotations

import json
import os
import secrets
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import Draft202012Validator

from .schema_check import compile_check

SPEC_VERSION = "1.0"
DATASCHEMA_PREFIX = "urn:yilian:schema:"


class InvalidEvent(ValueError):
    """An envelope or its data does not satisfy the CloudEvents spec or its schema."""


def new_traceparent() -> str:
    """A W3C ``traceparent`` (CloudEvents distributed-tracing extension) for a new flow."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Event:
    """A CloudEvents 1.0 envelope (JSON format)."""

    type: str
    subject: str
    data: dict[str, Any]
    source: str = "/yilian"
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time: str = field(default_factory=utc_now)
    version: int = 1
    # Correlation: every event caused by another carries the cause's traceparent.
    traceparent: str = field(default_factory=new_traceparent)

    @property
    def dataschema(self) -> str:
        return f"{DATASCHEMA_PREFIX}{self.type}:{self.version}"

    def caused(self, type: str, subject: str, data: dict[str, Any], *, source: str | None = None,
               version: int = 1) -> Event:
        """A new event caused by this one: same correlation, fresh id and time."""
        return Event(type=type, subject=subject, data=data, source=source or self.source,
                     version=version, traceparent=self.traceparent)

    def to_dict(self) -> dict[str, Any]:
        return {
            "specversion": SPEC_VERSION,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "subject": self.subject,
            "time": self.time,
            "datacontenttype": "application/json",
            "dataschema": self.dataschema,
            "traceparent": self.traceparent,
            "data": self.data,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Event:
        try:
            if d.get("specversion") != SPEC_VERSION:
                raise InvalidEvent(f"specversion must be {SPEC_VERSION!r}, got {d.get('specversion')!r}")
            schema = d.get("dataschema", "")
            version = 1
            if schema.startswith(DATASCHEMA_PREFIX):
                version = int(schema.rsplit(":", 1)[1])
            return cls(type=d["type"], subject=d["subject"], data=d["data"], source=d["source"],
                       id=d["id"], time=d["time"], version=version,
                       traceparent=d.get("traceparent") or new_traceparent())
        except KeyError as exc:
            raise InvalidEvent(f"envelope lacks required attribute {exc.args[0]!r}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, InvalidEvent):
                raise
            raise InvalidEvent(f"malformed envelope: {exc}") from None

    @classmethod
    def from_json(cls, raw: str | bytes) -> Event:
        try:
            d = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidEvent(f"envelope is not JSON: {exc}") from None
        if not isinstance(d, dict):
            raise InvalidEvent("envelope is not a JSON object")
        return cls.from_dict(d)

    def with_source(self, source: str) -> Event:
        return replace(self, source=source)


def default_schemas_dir() -> Path:
    env = os.environ.get("YILIAN_SCHEMAS_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "schemas"


class SchemaRegistry:
    """The event schemas under ``schemas/events``, one per type and version."""

    def __init__(self, schemas_dir: Path | None = None) -> None:
        self.dir = (schemas_dir or default_schemas_dir()) / "events"
        self._validators: dict[tuple[str, int], _Schema] = {}
        envelope = self.dir / "envelope.json"
        if not envelope.is_file():
            raise FileNotFoundError(f"event schemas not found at {self.dir}")
        # The envelope is checked without a format checker (its "time" format is an annotation).
        self._envelope = _Schema(Draft202012Validator(json.loads(envelope.read_text("utf-8"))))
        for path in sorted(self.dir.glob("*.v*.json")):
            type_, _, rest = path.name.rpartition(".v")
            version = int(rest.removesuffix(".json"))
            schema = json.loads(path.read_text("utf-8"))
            Draft202012Validator.check_schema(schema)
            self._validators[(type_, version)] = _Schema(Draft202012Validator(
                schema, format_checker=Draft202012Validator.FORMAT_CHECKER))

    @property
    def types(self) -> list[str]:
        return sorted({t for t, _ in self._validators})

    def validate(self, event: Event) -> None:
        """Raise :class:`InvalidEvent` with a precise message unless ``event`` is valid."""
        self._envelope.check(event.to_dict(), f"{event.type} envelope")
        schema = self._validators.get((event.type, event.version))
        if schema is None:
            raise InvalidEvent(f"no schema for event type {event.type!r} version {event.version}")
        schema.check(event.data, f"{event.type} v{event.version} data")

    def compiled(self, type: str, version: int = 1) -> bool:
        """Whether the data schema of ``type`` has a compiled fast check (else jsonschema alone)."""
        return self._validators[(type, version)].fast is not None


class _Schema:
    """One schema: a compiled yes/no check for the common case, jsonschema for the verdict and
    the message whenever that check does not vouch for the instance."""

    __slots__ = ("fast", "validator")

    def __init__(self, validator: Draft202012Validator) -> None:
        self.validator = validator
        self.fast = compile_check(validator.schema, format_checker=validator.format_checker)

    def check(self, instance: Any, what: str) -> None:
        if self.fast is not None and self.fast(instance):
            return
        error = jsonschema.exceptions.best_match(self.validator.iter_errors(instance))
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            raise InvalidEvent(f"{what} invalid at {where}: {error.message}")


@lru_cache(maxsize=4)
def registry(schemas_dir: str | None = None) -> SchemaRegistry:
    """The process-wide registry (schemas are read once)."""
    return SchemaRegistry(Path(schemas_dir) if schemas_dir else None)
