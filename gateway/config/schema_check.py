"""Validates config data against a JSON schema and turns jsonschema errors into human problems.

Schema extensions understood here (jsonschema ignores them otherwise):

* ``x-name`` / ``x-expected`` on a (sub)schema: used to word a failure of that schema, e.g.
  ``'5000x' is not a valid port (expected an integer 1-65535 or a string of digits)``;
* ``x-unsupported`` on a property's schema: the key is accepted (ThingsBoard gateway compatibility)
  but not used; its presence gives a warning carrying the keyword's text;
* ``additionalProperties: false``: an unknown key gives a *warning* naming the closest known key.
"""
from __future__ import annotations

import difflib
import json
import os
import re
from functools import cache
from typing import Any

from jsonschema import Draft202012Validator, ValidationError, validators

from gateway.config.document import Problems
from gateway.config.locate import join

_TYPE_NAMES = {"object": "an object", "array": "a list", "string": "a string", "integer": "an integer",
               "number": "a number", "boolean": "true or false", "null": "null"}


def _unsupported(validator: Any, reason: str, instance: Any, schema: dict) -> Any:
    yield ValidationError(reason)


_Validator = validators.extend(Draft202012Validator, {"x-unsupported": _unsupported})


@cache
def load_schema(path: str) -> dict:
    """A schema file's content, read once."""
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def schema_path(module_file: str, name: str) -> str:
    """The path of schema file ``name`` next to ``module_file``."""
    return os.path.join(os.path.dirname(os.path.abspath(module_file)), name)


def check_schema(data: Any, schema: dict, problems: Problems, base: str = "") -> bool:
    """Add a problem for every schema violation in ``data``; True if there was no *error*.

    ``base`` is the JSON pointer of ``data`` inside its file (for sub-documents).
    """
    ok = True
    errors = sorted(_Validator(schema).iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path])
    for error in errors:
        pointer = join(base, *error.absolute_path)
        if error.validator == "x-unsupported":
            problems.warn(pointer, f"'{error.absolute_path[-1] if error.absolute_path else ''}' is accepted "
                          f"for compatibility but not used by rest-gateway: {error.message}")
        elif error.validator == "additionalProperties":
            _unknown_keys(error, pointer, problems)
        else:
            ok = False
            message, expected = describe(error)
            if _is_credential(error.absolute_path):
                message = "is not valid (the value is not shown: it is a credential)"
            problems.error(pointer, message, expected)
    return ok


_CREDENTIAL_WORDS = ("password", "token", "secret")


def _is_credential(path: Any) -> bool:
    """Whether a value at ``path`` is a credential, whose text must never be printed."""
    return any(isinstance(p, str) and any(w in p.lower() for w in _CREDENTIAL_WORDS) for p in path)


def _unknown_keys(error: ValidationError, pointer: str, problems: Problems) -> None:
    known = list(error.schema.get("properties", {}))
    patterns = list(error.schema.get("patternProperties", {}))
    instance = error.instance if isinstance(error.instance, dict) else {}
    for key in map(str, instance):
        if key in known or any(re.search(p, key) for p in patterns):
            continue
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        lowered = [k for k in known if k.lower() == key.lower()]
        if lowered or close:
            problems.warn(join(pointer, key),
                          f"unknown key '{key}' is ignored; did you mean '{(lowered or close)[0]}'?")
        else:
            problems.warn(join(pointer, key), f"unknown key '{key}' is ignored",
                          "one of " + ", ".join(sorted(known)))


def short(value: Any, limit: int = 60) -> str:
    """``repr`` of a value, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(error: ValidationError) -> tuple[str, str]:
    """(what is wrong, what is expected) for one jsonschema error, in words."""
    schema, value, kind = error.schema, error.instance, error.validator
    name = schema.get("x-name") if isinstance(schema, dict) else None
    expected = schema.get("x-expected", "") if isinstance(schema, dict) else ""
    if name and kind not in ("required",):
        return f"{short(value)} is not a valid {name}", expected
    if kind == "required":
        missing = error.validator_value
        absent = [k for k in missing if isinstance(value, dict) and k not in value]
        key = absent[0] if absent else missing[0]
        return f"missing required key '{key}'", expected or "the key to be set"
    if kind == "type":
        wanted = error.validator_value
        wanted = wanted if isinstance(wanted, list) else [wanted]
        words = " or ".join(_TYPE_NAMES.get(w, w) for w in wanted)
        return f"{short(value)} is not {words}", expected or words
    if kind == "enum":
        options = ", ".join(repr(o) for o in error.validator_value)
        return f"{short(value)} is not a known value", expected or f"one of {options}"
    if kind == "const":
        return f"{short(value)} is not allowed", expected or repr(error.validator_value)
    if kind in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"):
        sign = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}[kind]
        return f"{short(value)} is out of range", expected or f"a value {sign} {error.validator_value}"
    if kind in ("minItems", "minLength", "minProperties"):
        return "must not be empty", expected or "at least one entry"
    if kind == "pattern":
        return f"{short(value)} has the wrong form", expected or f"text matching {error.validator_value}"
    if kind in ("anyOf", "oneOf"):
        inner = [describe(sub) for sub in error.context or [] if sub.validator not in ("type",)]
        if inner:
            return inner[0]
        types = [sub.validator_value for sub in error.context or [] if sub.validator == "type"]
        flat = [t for group in types for t in (group if isinstance(group, list) else [group])]
        words = " or ".join(_TYPE_NAMES.get(t, t) for t in dict.fromkeys(flat)) or "another value"
        return f"{short(value)} is not {words}", expected or words
    return error.message, expected
