"""Checking tool-call arguments against their JSON Schema, fast for the schemas tools use.

`jsonschema` is the reference, but its validators walk the schema through generic machinery:
~25 µs for a one-property object, a tenth of a whole request's CPU. The schemas clients offer
tools are nearly always small objects of typed properties, so `compile_check` turns such a
schema (the keywords in `_KEYWORDS`, no `$schema`, `$ref` or combinators) into nested closures
that answer the same as `jsonschema`'s Draft 2020-12 validator (a differential test holds them to
it); any other schema is checked by `jsonschema` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for

Check = Callable[[Any], bool]

# Keywords the closures implement; annotations are ignored, as jsonschema ignores them (`format`
# too: jsonschema checks no format unless given a format checker, and tools get none), and so
# is any keyword jsonschema does not act on.
_KEYWORDS = frozenset(
    (
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "enum",
        "const",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
    )
)
_OBJECT_KEYWORDS = frozenset(("type", "properties", "required", "additionalProperties"))
_ANNOTATIONS = frozenset(
    ("title", "description", "default", "examples", "$comment", "format", "deprecated", "readOnly", "writeOnly")
)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


_TYPES: dict[str, Check] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "number": _is_number,
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
}


def schema_problem(schema: dict[str, Any]) -> str | None:
    """The rule a schema breaks, and where in it (its metaschema's: the `$schema` draft it names,
    else 2020-12); None when it is valid. Tools' parameters and response formats are checked by it."""
    declared = schema.get("$schema")
    if declared is not None and not isinstance(declared, str):
        return "'$schema' must be a string (the URI of a JSON Schema draft)"
    cls = validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        at = "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in exc.path)  # a JSON Pointer
        return f"{exc.message} (at {at})" if at else exc.message
    except RecursionError:  # the checker recurses per level: about 100 levels of properties
        return "it is nested too deeply to be checked"
    return None


def validator(schema: dict[str, Any]) -> Validator:
    """jsonschema's validator for a schema `schema_problem` found valid."""
    return validator_for(schema, default=Draft202012Validator)(schema)


class _Unsupported(Exception):
    """The schema uses something the closures do not implement: jsonschema checks it."""


def compile_check(schema: dict[str, Any], validator: Validator) -> Check:
    """A function telling whether a value satisfies `schema` (already checked to be valid, with
    `validator` its jsonschema validator)."""
    if "$schema" in schema:
        return validator.is_valid
    try:
        return _compile(schema, frozenset(type(validator).VALIDATORS))
    except _Unsupported:
        return validator.is_valid


def _compile(schema: Any, validated: frozenset[str]) -> Check:
    """`validated`: the keywords jsonschema acts on; it ignores any other, and so do these."""
    if schema is True:
        return lambda v: True
    if schema is False:
        return lambda v: False
    if not isinstance(schema, dict):
        raise _Unsupported
    if schema.get("type") == "object" and validated.isdisjoint(set(schema) - _OBJECT_KEYWORDS - _ANNOTATIONS):
        return _object(schema, validated)
    checks: list[Check] = []
    for keyword, value in schema.items():
        if keyword in _ANNOTATIONS or keyword not in validated:
            continue
        if keyword not in _KEYWORDS:
            raise _Unsupported
        try:
            checks.append(_keyword(keyword, value, schema, validated))
        except (KeyError, TypeError, AttributeError):
            raise _Unsupported from None
    checks = [c for c in checks if c is not _ALWAYS]
    if not checks:
        return _ALWAYS
    if len(checks) == 1:
        return checks[0]

    def every(value: Any) -> bool:
        for check in checks:  # noqa: SIM110 (a loop: no generator object per call)
            if not check(value):
                return False
        return True

    return every


# The Python type each JSON Schema type's values are read as, for types with one such type (and
# no other: bool is not taken for int, nor int for float, by `type(v) is`).
_EXACT_TYPES: dict[str, type] = {"string": str, "integer": int, "boolean": bool, "object": dict, "array": list}


def _object(schema: dict[str, Any], validated: frozenset[str]) -> Check:
    """The usual tool schema, an object of typed properties, as one loop (the generic closures
    cost several function calls a keyword). A property whose schema is a type alone (annotations
    aside) is accepted by one `type(v) is` test when its value has that exact type; any other
    value goes through its compiled check, which rejects it or accepts it as jsonschema does."""
    try:
        subschemas = schema.get("properties") or {}
        properties = {name: _compile(sub, validated) for name, sub in subschemas.items()}
        required = tuple(schema.get("required") or ())
        extra_schema = schema.get("additionalProperties", True)
    except AttributeError:
        raise _Unsupported from None
    extra = None if extra_schema is True else _compile(extra_schema, validated)
    exact = {name: _exact_type(sub, validated) for name, sub in subschemas.items()}

    def check(value: Any) -> bool:
        if not isinstance(value, dict):
            return False
        for name in required:
            if name not in value:
                return False
        for name, item in value.items():
            if type(item) is exact.get(name):
                continue
            test = properties.get(name, extra)
            if test is not None and not test(item):
                return False
        return True

    return check


def _exact_type(schema: Any, validated: frozenset[str]) -> type | None:
    """The one Python type whose values satisfy `schema` outright, when it says nothing but a type
    that has one (`_EXACT_TYPES`); else None (no value's type is None's)."""
    if not isinstance(schema, dict) or not isinstance(schema.get("type"), str):
        return None
    if any(keyword != "type" and keyword in validated and keyword not in _ANNOTATIONS for keyword in schema):
        return None
    return _EXACT_TYPES.get(schema["type"])


def _ALWAYS(value: Any) -> bool:
    return True


def _keyword(keyword: str, value: Any, schema: dict[str, Any], validated: frozenset[str]) -> Check:
    if keyword == "type":
        if isinstance(value, str):
            return _TYPES[value]
        tests = [_TYPES[name] for name in value]
        return lambda v: any(test(v) for test in tests)
    if keyword == "properties":
        compiled = {name: _compile(sub, validated) for name, sub in value.items()}
        return lambda v: not isinstance(v, dict) or all(check(v[name]) for name, check in compiled.items() if name in v)
    if keyword == "required":
        return lambda v: not isinstance(v, dict) or all(name in v for name in value)
    if keyword == "additionalProperties":
        known = frozenset(schema.get("properties") or ())
        extra = _compile(value, validated)
        return lambda v: not isinstance(v, dict) or all(extra(v[k]) for k in v if k not in known)
    if keyword == "items":
        if not isinstance(value, dict | bool):
            raise _Unsupported
        item = _compile(value, validated)
        return lambda v: not isinstance(v, list) or all(item(x) for x in v)
    if keyword in ("enum", "const"):
        members = value if keyword == "enum" else [value]
        if not all(isinstance(m, str) for m in members):
            raise _Unsupported  # jsonschema's equality tells 1 from True and 1.0: not redone here
        allowed = frozenset(members)
        return lambda v: isinstance(v, str) and v in allowed
    if keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        bound = value
        test: Callable[[Any], bool] = {
            "minimum": lambda v: v >= bound,
            "maximum": lambda v: v <= bound,
            "exclusiveMinimum": lambda v: v > bound,
            "exclusiveMaximum": lambda v: v < bound,
        }[keyword]
        return lambda v: not _is_number(v) or test(v)
    if keyword in ("minLength", "maxLength"):
        size = value
        if keyword == "minLength":
            return lambda v: not isinstance(v, str) or len(v) >= size
        return lambda v: not isinstance(v, str) or len(v) <= size
    size = value  # minItems, maxItems
    if keyword == "minItems":
        return lambda v: not isinstance(v, list) or len(v) >= size
    return lambda v: not isinstance(v, list) or len(v) <= size
