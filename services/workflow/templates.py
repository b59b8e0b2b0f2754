"""Report templates (报告模板管理): their shape, and a report's structured fields checked against one.  I/O free.

A template is versioned data (``docs/reports.md``): per kind, modality and body part / exam, the
titles of the report's two text sections (``findings`` 影像所见 / ``impression`` 诊断意见; an ECG's
波形 / 结论) with the normal default text (正常模板) a reader starts from, and structured fields
(``choice`` or ``number`` with a unit, e.g. the ECG's 心律 / 心率 / 电轴).  The consortium's
templates (``scope: consortium``) are shipped as files and loaded at start; a centre adds its own
(``scope`` = the centre's id).  Every version is kept; a report records the one it was written with.
"""

from __future__ import annotations

import re
from typing import Any

from ..core.consortium import KINDS
from .errors import Invalid

Doc = dict[str, Any]

TEMPLATE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
FIELD_KEY = re.compile(r"^[a-z][a-z0-9_]{0,15}$")  # also the SR item's Code Value (SH: at most 16)
SECTIONS = ("findings", "impression")  # the report's text sections, in order
FIELD_TYPES = ("choice", "number", "text")
# What a version is made of (and what is compared to tell whether a shipped file changed).
CONTENT = ("name", "kind", "modalities", "body_part", "exam", "sections", "fields")
MAX_TEXT = 20_000


def _str(value: Any, what: str, *, limit: int = 200, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise Invalid(f"{what} must be a non-empty string")
    if len(value) > limit:
        raise Invalid(f"{what} is longer than {limit} characters")
    return value


def parse(body: Any, *, template_id: str | None = None) -> Doc:
    """A template's content from a file or request body; :class:`Invalid` names the first problem."""
    if not isinstance(body, dict):
        raise Invalid("a report template must be an object")
    allowed = {"id", "scope", *CONTENT}
    if unknown := sorted(set(body) - allowed):
        raise Invalid(f"unknown template key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
    tid = template_id or body.get("id")
    if not isinstance(tid, str) or not TEMPLATE_ID.match(tid):
        raise Invalid(f"template id {tid!r} must match {TEMPLATE_ID.pattern}")
    kind = body.get("kind")
    if kind not in KINDS:
        raise Invalid(f"template {tid}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
    modalities = body.get("modalities") or []
    if not isinstance(modalities, list) or not all(isinstance(m, str) and re.match(r"^[A-Z0-9]{2,16}$", m)
                                                   for m in modalities):
        raise Invalid(f"template {tid}: modalities must be a list of DICOM modality codes (e.g. [DX, CR])")
    sections = body.get("sections")
    if not isinstance(sections, dict) or set(sections) != set(SECTIONS):
        raise Invalid(f"template {tid}: sections must have exactly {' and '.join(SECTIONS)}")
    out_sections = {}
    for key in SECTIONS:
        s = sections[key]
        if not isinstance(s, dict) or set(s) - {"title", "normal"}:
            raise Invalid(f"template {tid}: section {key} must be {{title, normal}}")
        out_sections[key] = {"title": _str(s.get("title"), f"template {tid}: section {key}.title", limit=40),
                             "normal": _str(s.get("normal"), f"template {tid}: section {key}.normal",
                                            limit=MAX_TEXT)}
    fields = body.get("fields") or []
    if not isinstance(fields, list):
        raise Invalid(f"template {tid}: fields must be a list")
    out_fields, seen = [], set()
    for f in fields:
        out_fields.append(_field(tid, f, seen))
    return {"id": tid, "name": _str(body.get("name"), f"template {tid}: name", limit=100), "kind": kind,
            "modalities": list(modalities),
            "body_part": _str(body.get("body_part"), f"template {tid}: body_part", limit=16, required=False),
            "exam": _str(body.get("exam"), f"template {tid}: exam", limit=100, required=False),
            "sections": out_sections, "fields": out_fields}


def _field(tid: str, f: Any, seen: set[str]) -> Doc:
    if not isinstance(f, dict):
        raise Invalid(f"template {tid}: each field must be an object")
    if unknown := sorted(set(f) - {"key", "label", "type", "choices", "unit", "min", "max", "normal"}):
        raise Invalid(f"template {tid}: unknown field key(s) {', '.join(unknown)}")
    key = f.get("key")
    if not isinstance(key, str) or not FIELD_KEY.match(key):
        raise Invalid(f"template {tid}: field key {key!r} must match {FIELD_KEY.pattern}")
    if key in seen:
        raise Invalid(f"template {tid}: duplicate field {key!r}")
    seen.add(key)
    what = f"template {tid}: field {key}"
    ftype = f.get("type")
    if ftype not in FIELD_TYPES:
        raise Invalid(f"{what}: type must be one of {', '.join(FIELD_TYPES)}, not {ftype!r}")
    out: Doc = {"key": key, "label": _str(f.get("label"), f"{what}.label", limit=40), "type": ftype}
    if ftype == "choice":
        choices = f.get("choices")
        if not isinstance(choices, list) or len(choices) < 2 or not all(isinstance(c, str) and c for c in choices) \
                or len(set(choices)) != len(choices):
            raise Invalid(f"{what}: a choice field needs at least two distinct choices")
        out["choices"] = list(choices)
    elif f.get("choices") is not None:
        raise Invalid(f"{what}: choices are only for a choice field")
    if ftype == "number":
        out["unit"] = _str(f.get("unit"), f"{what}.unit", limit=20, required=False)
        for bound in ("min", "max"):
            value = f.get(bound)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise Invalid(f"{what}: {bound} must be a number")
            out[bound] = value
        if out["min"] is not None and out["max"] is not None and out["min"] > out["max"]:
            raise Invalid(f"{what}: min is above max")
    elif f.get("unit") is not None or f.get("min") is not None or f.get("max") is not None:
        raise Invalid(f"{what}: unit, min and max are only for a number field")
    out["normal"] = None
    if f.get("normal") is not None:
        out["normal"] = check_value(out, f["normal"], what=f"{what}.normal")
    return out


def check_value(field: Doc, value: Any, *, what: str) -> Any:
    """``value`` for ``field`` or :class:`Invalid` (numbers are checked against min/max)."""
    if field["type"] == "choice":
        if value not in field["choices"]:
            raise Invalid(f"{what} must be one of {', '.join(field['choices'])}, not {value!r}")
    elif field["type"] == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Invalid(f"{what} must be a number" + (f" (in {field['unit']})" if field.get("unit") else ""))
        low, high = field.get("min"), field.get("max")
        if (low is not None and value < low) or (high is not None and value > high):
            unit = f" {field['unit']}" if field.get("unit") else ""
            raise Invalid(f"{what} {value} is outside {low}..{high}{unit}")
    elif not isinstance(value, str) or len(value) > 2000:
        raise Invalid(f"{what} must be a string of at most 2000 characters")
    return value


def check_fields(template: Doc, values: Any) -> Doc:
    """A report's structured field values checked against ``template`` (a stored version)."""
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise Invalid("fields must be an object of the template's field keys")
    known = {f["key"]: f for f in template.get("fields") or []}
    if unknown := sorted(set(values) - set(known)):
        raise Invalid(f"template {template['template_id']} v{template['version']} has no field(s) "
                      f"{', '.join(unknown)}")
    return {k: check_value(known[k], v, what=f"field {k}") for k, v in values.items() if v is not None}


def structured(template: Doc, values: Doc) -> list[Doc]:
    """The filled fields in the template's order, with label and unit: what the SR codes item by item."""
    return [{"key": f["key"], "label": f["label"], "type": f["type"], "unit": f.get("unit"), "value": values[f["key"]]}
            for f in template.get("fields") or [] if values.get(f["key"]) is not None]


def same_content(a: Doc, b: Doc) -> bool:
    return all(a.get(k) == b.get(k) for k in CONTENT)


def normal_report(template: Doc) -> Doc:
    """The normal default (正常模板): the sections' normal texts and the fields' normal values."""
    return {"findings": template["sections"]["findings"]["normal"],
            "impression": template["sections"]["impression"]["normal"],
            "fields": {f["key"]: f["normal"] for f in template.get("fields") or [] if f.get("normal") is not None}}


def visible(template: Doc, *, role: str, centre: str | None) -> bool:
    """A consortium template is everyone's; a centre's is its own people's (and the admin's)."""
    return role == "admin" or template["scope"] == "consortium" or template["scope"] == centre
