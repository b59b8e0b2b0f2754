"""A yes/no check compiled from the subset of JSON Schema 2020-12 our event schemas use.

jsonschema walks a schema anew for every instance (keyword dispatch, ``descend``, error
generators), which costs ~0.1 ms per event.  :func:`compile_check` turns a schema into nested
closures once.  The check is *sound, not complete*: it answers ``True`` only for an instance
jsonschema's ``Draft202012Validator`` would accept; when in doubt (a float where an integer is
expected, a ``Decimal``, an enum compared with a non-string…) it answers ``False`` and the
caller asks jsonschema, which then decides and words the error.  A schema using any keyword
outside the subset compiles to ``None``: the caller uses jsonschema alone for it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from numbers import Number
from typing import Any

from jsonschema import FormatChecker

Check = Callable[[Any], bool]

# Keywords that never change the verdict.  ``$id`` is harmless because ``$ref`` is unsupported.
_ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "title", "description", "examples", "default",
                          "deprecated", "readOnly", "writeOnly"})
_SUPPORTED = _ANNOTATIONS | {"type", "properties", "required", "additionalProperties", "enum", "const",
                             "pattern", "minLength", "maxLength", "minimum", "items", "minItems", "format"}


class _Unsupported(Exception):
    """The schema uses something this compiler does not reproduce exactly."""


def compile_check(schema: Any, *, format_checker: FormatChecker | None) -> Check | None:
    """A predicate true only for instances ``schema`` accepts, or ``None`` if it cannot be built.

    ``format_checker`` must be the one the jsonschema validator uses (``None``: formats are
    annotations only, as in jsonschema without a format checker).
    """
    try:
        return _compile(schema, format_checker)
    except _Unsupported:
        return None


def _accept(_: Any) -> bool:
    return True


def _reject(_: Any) -> bool:
    return False


def _compile(schema: Any, fc: FormatChecker | None) -> Check:
    if schema is True:
        return _accept
    if schema is False:
        return _reject
    if not isinstance(schema, dict):
        raise _Unsupported(f"schema {schema!r}")
    unknown = schema.keys() - _SUPPORTED
    if unknown:
        raise _Unsupported(", ".join(sorted(unknown)))
    checks: list[Check] = []
    if "type" in schema:
        checks.append(_type(schema["type"]))
    if "enum" in schema:
        checks.append(_one_of_strings(schema["enum"]))
    if "const" in schema:
        checks.append(_one_of_strings([schema["const"]]))
    checks += _string(schema, fc)
    if "minimum" in schema:
        checks.append(_minimum(schema["minimum"]))
    if "items" in schema or "minItems" in schema:
        checks.append(_array(schema, fc))
    if {"properties", "required", "additionalProperties"} & schema.keys():
        checks.append(_object(schema, fc))
    return _all(checks)


def _all(checks: list[Check]) -> Check:
    if not checks:
        return _accept
    if len(checks) == 1:
        return checks[0]
    first, *rest = checks

    def check(x: Any) -> bool:
        if not first(x):
            return False
        for c in rest:
            if not c(x):
                return False
        return True
    return check


def _is_integer(x: Any) -> bool:
    # jsonschema (draft 6+) also takes 1.0 for an integer; we leave floats to it.
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    # jsonschema takes any numbers.Number; we vouch only for int and float.
    return isinstance(x, (int, float)) and not isinstance(x, bool)


# jsonschema's own definitions (jsonschema/_types.py), except as noted above.
_TYPES: dict[str, Check] = {
    "string": lambda x: isinstance(x, str),
    "object": lambda x: isinstance(x, dict),
    "array": lambda x: isinstance(x, list),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
    "integer": _is_integer,
    "number": _is_number,
}


def _type(types: Any) -> Check:
    names = [types] if isinstance(types, str) else types
    if not isinstance(names, list) or not names or not all(n in _TYPES for n in names):
        raise _Unsupported(f"type {types!r}")
    if len(names) == 1:
        return _TYPES[names[0]]
    preds = tuple(_TYPES[n] for n in names)
    return lambda x: any(p(x) for p in preds)


def _one_of_strings(values: Any) -> Check:
    # jsonschema compares with its own equal() (True is not 1, [1] == (1,)…); for strings and null
    # that is plain == (and ``is``), so only such enums are compiled, and only a str instance or
    # None is vouched for.
    if not isinstance(values, list) or not all(v is None or type(v) is str for v in values):
        raise _Unsupported(f"enum {values!r}")
    allowed = frozenset(v for v in values if v is not None)
    if None in values:
        return lambda x: x is None or (isinstance(x, str) and x in allowed)
    return lambda x: isinstance(x, str) and x in allowed


def _string(schema: dict[str, Any], fc: FormatChecker | None) -> list[Check]:
    """pattern, minLength, maxLength, format: each applies to strings only."""
    checks: list[Check] = []
    if "pattern" in schema:
        search = re.compile(schema["pattern"]).search  # jsonschema: re.search(pattern, instance)
        checks.append(lambda x: not isinstance(x, str) or search(x) is not None)
    low, high = schema.get("minLength"), schema.get("maxLength")
    if low is not None or high is not None:
        if not all(type(n) is int for n in (low or 0, high or 0)):
            raise _Unsupported("minLength/maxLength")
        lo, hi = low or 0, high if high is not None else float("inf")
        checks.append(lambda x: not isinstance(x, str) or lo <= len(x) <= hi)
    if "format" in schema and fc is not None and schema["format"] in fc.checkers:
        # The very checker jsonschema uses, so installed extras (rfc3339-validator…) count alike.
        fmt, conforms = schema["format"], fc.conforms
        checks.append(lambda x: conforms(x, fmt))
    return checks


def _minimum(minimum: Any) -> Check:
    if not _is_number(minimum):
        raise _Unsupported(f"minimum {minimum!r}")

    def check(x: Any) -> bool:
        if isinstance(x, bool) or not isinstance(x, Number):
            return True  # not a number to jsonschema: minimum does not apply
        return isinstance(x, (int, float)) and not x < minimum  # Decimal, Fraction…: jsonschema's call
    return check


def _array(schema: dict[str, Any], fc: FormatChecker | None) -> Check:
    item = _compile(schema.get("items", True), fc)
    least = schema.get("minItems", 0)
    if type(least) is not int:
        raise _Unsupported(f"minItems {least!r}")

    def check(x: Any) -> bool:
        if not isinstance(x, list):
            return True
        if len(x) < least:
            return False
        for each in x:
            if not item(each):
                return False
        return True
    return check


def _object(schema: dict[str, Any], fc: FormatChecker | None) -> Check:
    props = {name: _compile(sub, fc) for name, sub in schema.get("properties", {}).items()}
    required = tuple(schema.get("required", ()))
    additional = schema.get("additionalProperties", True)
    other = None if additional is True else _compile(additional, fc)

    def check(x: Any) -> bool:
        if not isinstance(x, dict):
            return True
        for name in required:
            if name not in x:
                return False
        for name, value in x.items():
            c = props.get(name)
            if c is None:
                c = other
                if c is None:
                    continue
            if not c(value):
                return False
        return True
    return check
