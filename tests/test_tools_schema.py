"""The fast argument checks answer as jsonschema's Draft 2020-12 validator does: schemas and values
made at random (fixed seed), every answer compared."""

from __future__ import annotations

import random
from typing import Any

from jsonschema import Draft7Validator, Draft202012Validator

from cocoon_platform.tools.schema import compile_check

VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -3,
    2.5,
    1.0,
    7,
    10**20,
    "",
    "a",
    "abcdef",
    "ünï",
    [],
    [1],
    ["a", "b"],
    [1, "a", None],
    {},
    {"a": 1},
    {"a": "x", "b": 2},
    {"c": [1, 2]},
    {"a": None, "z": True},
]
TYPES = ["object", "array", "string", "boolean", "null", "number", "integer"]


def random_schema(rng: random.Random, depth: int = 0) -> Any:
    if depth > 2 or rng.random() < 0.2:
        return rng.choice([{}, True, False, {"type": rng.choice(TYPES)}])
    schema: dict[str, Any] = {}
    keywords = rng.sample(
        [
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
            "description",
            "format",
            "pattern",
            "nullable",
            "anyOf",
        ],
        rng.randint(1, 5),
    )
    for keyword in keywords:
        if keyword == "type":
            schema["type"] = rng.choice(TYPES) if rng.random() < 0.7 else rng.sample(TYPES, 2)
        elif keyword == "properties":
            schema["properties"] = {name: random_schema(rng, depth + 1) for name in rng.sample("abcz", 2)}
        elif keyword == "required":
            schema["required"] = rng.sample("abcz", rng.randint(0, 2))
        elif keyword == "additionalProperties":
            schema["additionalProperties"] = random_schema(rng, depth + 1)
        elif keyword == "items":
            schema["items"] = random_schema(rng, depth + 1)
        elif keyword == "enum":
            schema["enum"] = rng.choice([["a", "abcdef"], [1, True], ["x"], [None, 1.0]])
        elif keyword == "const":
            schema["const"] = rng.choice(["a", 1, True, None])
        elif keyword in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
            schema[keyword] = rng.choice([0, 1, 2.5, 7])
        elif keyword in ("minLength", "maxLength", "minItems", "maxItems"):
            schema[keyword] = rng.randint(0, 3)
        elif keyword == "description":
            schema["description"] = "text"
        elif keyword == "format":
            schema["format"] = "email"
        elif keyword == "pattern":
            schema["pattern"] = "^a"
        elif keyword == "nullable":
            schema["nullable"] = True
        else:
            schema["anyOf"] = [random_schema(rng, depth + 1), random_schema(rng, depth + 1)]
    return schema


def test_fast_checks_agree_with_jsonschema() -> None:
    rng = random.Random(2026)
    fast = 0
    for _ in range(3000):
        schema = random_schema(rng)
        if not isinstance(schema, dict):
            schema = {"properties": {"a": schema}}
        reference = Draft202012Validator(schema)
        check = compile_check(schema, reference)
        fast += getattr(check, "__self__", None) is not reference
        for value in VALUES:
            assert check(value) == reference.is_valid(value), (schema, value)
    assert fast > 1500  # most schemas took the fast path: the comparison tested it


def test_declared_drafts_go_to_jsonschema() -> None:
    schema = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "integer"}
    validator = Draft7Validator(schema)
    assert compile_check(schema, validator) == validator.is_valid
