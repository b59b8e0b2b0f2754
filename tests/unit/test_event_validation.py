"""The compiled event check (services/core/schema_check.py) decides exactly as jsonschema does.

Valid instances: real events recorded from the services under test (``event_samples.jsonl``,
captured from the workflow, consultation, delivery, gateway and ECG tests) and, for every data
schema, one built from the schema itself.  Invalid ones: one-keyword mutations of each (a
required field removed, wrong types, empty and over-long strings, enum and pattern misses,
numbers below the minimum, an extra property, bad dates and date-times), recursively into nested
objects and array items.  The oracle is jsonschema's Draft202012Validator, as the registry used
it before the compiled check existed.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from services.core.events import Event, InvalidEvent, SchemaRegistry
from services.core.schema_check import compile_check

from ..support import ROOT

EVENTS_DIR = ROOT / "schemas" / "events"
SAMPLES = [json.loads(line) for line in (Path(__file__).parent / "event_samples.jsonl").read_text("utf-8").splitlines()]
FORMATS = Draft202012Validator.FORMAT_CHECKER


def _data_schemas() -> dict[str, dict[str, Any]]:
    return {p.name.rpartition(".v")[0]: json.loads(p.read_text("utf-8")) for p in sorted(EVENTS_DIR.glob("*.v1.json"))}


DATA_SCHEMAS = _data_schemas()
ENVELOPE = json.loads((EVENTS_DIR / "envelope.json").read_text("utf-8"))

# Values the compiled check leaves to jsonschema on purpose (it vouches only for plain JSON
# numbers): it may say "no" where jsonschema says "yes", never the reverse.
def _deferred(value: Any) -> bool:
    return isinstance(value, Decimal) or (isinstance(value, float) and value.is_integer())


# Edges of the keywords our schemas use; each property of each object is set to each in turn.
BANK: list[Any] = [
    None, True, False, 0, -1, 7, 1.5, 1.0, -0.5, 2 ** 64, Decimal(3), Decimal(-3),
    "", "x", "X", "1", "1.2.840.10008.1.2", "1.2.", ".1", "1..2", "1.2\n", "1.2 ", "１.２", "1" * 65,
    "2026-11-23", "2026-02-30", "23/11/2026", "2026-11-23T10:00:00.000Z", "2026-11-23T25:00:00Z",
    "yesterday", [], ["x"], [None], [{}], {}, {"a": 1},
]


def _example(schema: Any) -> Any:
    """A valid instance built from ``schema`` (every property present)."""
    if not isinstance(schema, dict):
        return None
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    types = schema.get("type", "object")
    type_ = next(t for t in ([types] if isinstance(types, str) else types) if t != "null")
    if type_ == "object":
        return {name: _example(sub) for name, sub in schema.get("properties", {}).items()}
    if type_ == "array":
        return [_example(schema.get("items", {}))] * max(1, schema.get("minItems", 0))
    if type_ in ("integer", "number"):
        return schema.get("minimum", 0) + 1
    if type_ == "boolean":
        return True
    if schema.get("format") == "date-time":
        return "2026-11-23T10:00:00.000Z"
    if schema.get("format") == "date":
        return "2026-11-23"
    if "pattern" in schema:
        fits = [s for s in ("1.2.840.10008.5.1.4.1.1.2", "x", "2026-11") if Draft202012Validator(schema).is_valid(s)]
        assert fits, f"add an example string for pattern {schema['pattern']!r}"
        return fits[0]
    return "x" * max(1, schema.get("minLength", 0))


def _variants(schema: Any, value: Any) -> list[Any]:
    """Values to try in place of ``value`` (valid under ``schema``)."""
    out = list(BANK)
    if not isinstance(schema, dict):
        return out
    for e in schema.get("enum", []) + ([schema["const"]] if "const" in schema else []):
        out += [e, e.upper() + "_", e + "\n", e[:-1]] if isinstance(e, str) else [e, str(e), [e]]
    if "maxLength" in schema:
        out += ["1" * schema["maxLength"], "1" * (schema["maxLength"] + 1)]
    if "minimum" in schema:
        m = schema["minimum"]
        out += [m, m - 1, m + 0.5, float(m), float(m - 1)]
    if isinstance(value, dict) or "properties" in schema:
        out += _object_mutations(schema, value if isinstance(value, dict) else _example(schema))
    if "items" in schema:
        item = value[0] if isinstance(value, list) and value else _example(schema["items"])
        out += [[item, v] for v in _variants(schema["items"], item)]
    return out


def _object_mutations(schema: dict[str, Any], obj: dict[str, Any]) -> list[dict[str, Any]]:
    out = [{k: v for k, v in obj.items() if k != name} for name in schema.get("required", []) if name in obj]
    out.append({**obj, "zz_extra": "x"})
    for name, sub in schema.get("properties", {}).items():
        out += [{**obj, name: v} for v in _variants(sub, obj.get(name))]
    return out


def _verdicts(schema: dict[str, Any], instances: list[Any], formats: FormatChecker | None) -> int:
    """Assert the compiled check and jsonschema agree on each instance; returns how many rejected."""
    validator = Draft202012Validator(schema, format_checker=formats)
    fast = compile_check(schema, format_checker=formats)
    assert fast is not None, f"{schema.get('title')}: not compiled"
    rejected = 0
    for instance in instances:
        slow = validator.is_valid(instance)
        quick = fast(instance)
        if quick and not slow:
            pytest.fail(f"{schema.get('title')}: compiled check accepts what jsonschema rejects: {instance!r}")
        if slow and not quick:
            assert _deferred_somewhere(instance), f"{schema.get('title')}: compiled check rejects {instance!r}"
        rejected += not slow
    return rejected


def _deferred_somewhere(x: Any) -> bool:
    if isinstance(x, dict):
        return any(_deferred_somewhere(v) for v in x.values())
    if isinstance(x, list):
        return any(_deferred_somewhere(v) for v in x)
    return _deferred(x)


def _jsonschema_message(validator: Draft202012Validator, instance: Any, what: str) -> str | None:
    """The registry's message as it was before the compiled check (best_match over iter_errors)."""
    error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"{what} invalid at {where}: {error.message}"


def _registry_message(reg: SchemaRegistry, event: Event) -> str | None:
    try:
        reg.validate(event)
    except InvalidEvent as exc:
        return str(exc)
    return None


def test_samples_cover_most_types_and_every_schema_is_compiled(schemas):
    recorded = {e["type"] for e in SAMPLES}
    assert len(recorded) >= 30 and recorded <= set(DATA_SCHEMAS)
    for type_ in DATA_SCHEMAS:
        assert schemas.compiled(type_), f"{type_} falls back to jsonschema: its validation stays slow"


@pytest.mark.parametrize("type_", sorted(DATA_SCHEMAS))
def test_data_verdicts_agree_with_jsonschema(type_):
    schema = DATA_SCHEMAS[type_]
    valid = [e["data"] for e in SAMPLES if e["type"] == type_] + [_example(schema)]
    assert all(Draft202012Validator(schema, format_checker=FORMATS).is_valid(v) for v in valid)
    assert compile_check(schema, format_checker=FORMATS)(valid[-1])
    mutated = [m for v in valid for m in _variants(schema, v)]
    rejected = _verdicts(schema, valid + mutated, FORMATS)
    assert rejected > len(mutated) // 4  # the mutations do bite


def test_envelope_verdicts_agree_with_jsonschema():
    # As in the registry: no format checker for the envelope ("time" is not checked there).
    mutated = [m for e in SAMPLES for m in _object_mutations(ENVELOPE, e)]
    rejected = _verdicts(ENVELOPE, SAMPLES + mutated, None)
    assert rejected > len(mutated) // 2


def test_registry_accepts_recorded_events_and_words_rejections_as_jsonschema(schemas):
    envelope = Draft202012Validator(ENVELOPE)
    for sample in SAMPLES:
        assert _registry_message(schemas, Event.from_dict(sample)) is None
    for sample in {e["type"]: e for e in SAMPLES}.values():  # one per type: messages cost
        event = Event.from_dict(sample)
        data_validator = Draft202012Validator(DATA_SCHEMAS[event.type], format_checker=FORMATS)
        bad_envelopes = [replace(event, type=event.type.upper()), replace(event, traceparent="00-xyz"),
                         replace(event, subject=""), replace(event, id=""), replace(event, time="yesterday")]
        for bad in bad_envelopes:
            assert _registry_message(schemas, bad) == _jsonschema_message(
                envelope, bad.to_dict(), f"{bad.type} envelope")
        schema = DATA_SCHEMAS[event.type]
        removed = [{k: v for k, v in event.data.items() if k != name} for name in schema["required"]]
        changed = [{**event.data, name: v} for name in schema["properties"]
                   for v in (None, 1.5, -1, "", "1" * 65, "2026-02-30", "yesterday", [], [None], {})]
        for data in removed + changed + [{**event.data, "zz_extra": "x"}]:
            expected = _jsonschema_message(data_validator, data, f"{event.type} v1 data")
            assert _registry_message(schemas, replace(event, data=data)) == expected


def test_rejections_keep_their_precise_messages(schemas):
    sample = next(e for e in SAMPLES if e["type"] == "instance.stored")
    event = Event.from_dict(sample)
    cases = {
        "study_uid": ("1.2.abc", ("instance.stored v1 data invalid at study_uid: '1.2.abc' does not match "
                                  "'^[0-9]+(\\\\.[0-9]+)*$'")),
        "size": (-1, "instance.stored v1 data invalid at size: -1 is less than the minimum of 0"),
        "calling_ae": ("A" * 17, f"instance.stored v1 data invalid at calling_ae: {'A' * 17!r} is too long"),
        "replaced": ("no", "instance.stored v1 data invalid at replaced: 'no' is not of type 'boolean'"),
    }
    for field, (value, message) in cases.items():
        with pytest.raises(InvalidEvent) as err:
            schemas.validate(replace(event, data={**event.data, field: value}))
        assert str(err.value) == message
    with pytest.raises(InvalidEvent, match="'organization' is a required property"):
        schemas.validate(replace(event, data={k: v for k, v in event.data.items() if k != "organization"}))
    # Left to jsonschema, which takes an integral float for an integer (draft 6 and later).
    schemas.validate(replace(event, data={**event.data, "size": 34000.0}))


def test_event_date_times_are_checked(schemas):
    # rfc3339-validator (a dependency) gives jsonschema its "date-time" check: a time of an
    # event's data that is not RFC 3339 (no offset, no "T", not a time at all) is refused.
    assert "date-time" in FORMATS.checkers
    sample = next(e for e in SAMPLES if e["type"] == "report.signed")
    event = Event.from_dict(sample)
    assert DATA_SCHEMAS["report.signed"]["properties"]["signed_at"]["format"] == "date-time"
    for good in ("2026-11-23T10:00:00Z", "2026-11-23T18:00:00.123+08:00"):
        schemas.validate(replace(event, data={**event.data, "signed_at": good}))
    for bad in ("2026-11-23 10:00:00", "2026-11-23T10:00:00", "2026-11-23", "yesterday"):
        with pytest.raises(InvalidEvent) as err:
            schemas.validate(replace(event, data={**event.data, "signed_at": bad}))
        assert str(err.value) == f"report.signed v1 data invalid at signed_at: {bad!r} is not a 'date-time'"


def test_format_is_checked_by_the_validators_own_format_checker():
    # jsonschema checks "date-time" only with rfc3339-validator installed; whatever checker it
    # has, the compiled check asks the same one.
    strict = FormatChecker()
    strict.checks("date-time", raises=ValueError)(
        lambda s: not isinstance(s, str) or bool(s.endswith("Z") and s.index("T") == 10))
    schema = {"type": "object", "properties": {"at": {"type": "string", "format": "date-time"},
                                               "on": {"type": "string", "format": "date"}}}
    instances = [{"at": "2026-11-23T10:00:00Z"}, {"at": "yesterday"}, {"at": "2026-11-23"},
                 {"on": "2026-11-23"}, {"on": "2026-02-30"}, {"on": "23.11.2026"}]
    assert _verdicts(schema, instances, strict) == 4  # "yesterday", "2026-11-23" (as a date-time), 2 dates
    assert _verdicts(schema, instances, FORMATS) >= 2  # the two bad dates, at least
    assert _verdicts(schema, instances, None) == 0


def test_a_schema_outside_the_subset_falls_back_to_jsonschema(tmp_path):
    events_dir = tmp_path / "events"
    events_dir.mkdir()
    shutil.copy(EVENTS_DIR / "envelope.json", events_dir / "envelope.json")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": {"uid": {"type": "string", "pattern": "^[0-9]+(\\.[0-9]+)*$"}},
        "type": "object", "required": ["study_uid"],
        "properties": {"study_uid": {"$ref": "#/$defs/uid"}},
        "oneOf": [{"required": ["a"]}, {"required": ["b"]}],
    }
    (events_dir / "thing.made.v1.json").write_text(json.dumps(schema), "utf-8")
    assert compile_check(schema, format_checker=FORMATS) is None
    reg = SchemaRegistry(tmp_path)
    assert not reg.compiled("thing.made")
    reg.validate(Event("thing.made", subject="s", data={"study_uid": "1.2", "a": 1}))
    with pytest.raises(InvalidEvent, match=r"at study_uid: '1\.x' does not match"):
        reg.validate(Event("thing.made", subject="s", data={"study_uid": "1.x", "a": 1}))
    with pytest.raises(InvalidEvent, match="is valid under each of"):
        reg.validate(Event("thing.made", subject="s", data={"study_uid": "1.2", "a": 1, "b": 2}))
