"""What each structured-output backend enforces of a JSON schema, and the schema it is given.

A keyword the backend would ignore means output that may not match the client's schema, so it
is a 400 that names the keyword and where it is (never silently unconstrained output). Measured
on vLLM 0.32's backends (xgrammar 0.2.8 for SentencePiece models, llguidance 1.7 for Tekken):

- both enforce ``type``, ``properties``/``required``, ``additionalProperties`` (true, false or a
  schema), ``items``/``prefixItems``, ``minItems``/``maxItems``, ``enum``/``const`` (any JSON
  values), ``anyOf``/``oneOf``, ``$ref``/``$defs``/``definitions`` (recursion too),
  ``minLength``/``maxLength``, ``pattern``, ``minimum``/``maximum`` and the exclusive ones,
  ``multipleOf``, and ``format`` date, date-time, time, duration, email, uuid, uri, ipv4, ipv6,
  hostname (other formats are annotations, as JSON Schema validators treat them by default);
  annotations (``title``, ``description``, ``default``, ``examples``…) are free;
- neither enforces ``not``, ``if``/``then``/``else``, ``dependentRequired``/``dependentSchemas``,
  ``contains``, ``uniqueItems: true``, ``propertyNames``, ``unevaluated*``, ``$dynamicRef``;
- xgrammar also not ``patternProperties``, ``minProperties``/``maxProperties`` or an ``allOf``
  of more than one schema, which llguidance does enforce; and xgrammar builds a string from its
  ``format`` or its ``pattern`` alone, dropping ``minLength``/``maxLength`` beside either and a
  ``pattern`` beside a ``format``;
- xgrammar fails to compile a ``pattern`` that repeats anything more than 128 times (``a{200}``,
  ``.{0,500}``, ``(ab){129,}``) with its grammar cache on, as vLLM runs it: the request used to
  end as a 500 after admission. Those counts are refused here (a ``structured_outputs.regex``
  compiles another way and is not affected).

A known xgrammar 0.2.8 gap that is not refused: a string with ``minLength``/``maxLength`` (and no
``pattern``/``format``) may hold raw control characters U+0000–U+001F other than CR and LF,
which strict JSON parsers reject (mlc-ai/xgrammar#800; seen from a random model, not yet from a
trained one). A ``pattern`` such as ``^[^\\x00-\\x1f]{0,100}$`` avoids it.

Generation also closes objects: where a schema lists ``properties`` and says nothing about
``additionalProperties``, the backend is told ``false`` (xgrammar's strict mode does this for
SentencePiece models already). Output still validates against the client's schema, and a weak
model cannot run away with invented keys.
"""

from __future__ import annotations

import re
from typing import Any

from server.chat import schemas
from server.chat.refs import DATA, SCHEMA_MAPS, pointer, rebuild
from server.errors import InvalidRequest

_BOTH = ("not", "if", "then", "else", "dependentRequired", "dependentSchemas", "contains",
         "minContains", "maxContains", "propertyNames", "unevaluatedProperties",
         "unevaluatedItems", "$dynamicRef", "$recursiveRef")
UNENFORCED: dict[str, frozenset[str]] = {
    "xgrammar": frozenset(_BOTH + ("patternProperties", "minProperties", "maxProperties")),
    "guidance": frozenset(_BOTH),
}


def unenforced(schema: Any, backend: str) -> tuple[str, str] | None:
    """(keyword, JSON pointer) of the first keyword ``backend`` would not enforce, if any."""
    refused = UNENFORCED.get(backend, frozenset())

    def walk(node: Any, path: tuple[str | int, ...]) -> tuple[str, str] | None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                if (found := walk(item, (*path, i))) is not None:
                    return found
            return None
        if not isinstance(node, dict):
            return None
        for key, value in node.items():
            if key in refused and not (key == "uniqueItems" and value is False):
                return key, pointer(*path, key)
            if key == "uniqueItems" and value is True:
                return key, pointer(*path, key)
            if key == "allOf" and backend == "xgrammar" and isinstance(value, list) and len(value) > 1:
                return key, pointer(*path, key)
            if key == "$ref" and isinstance(value, str) and not value.startswith("#"):
                return "$ref (to another document)", pointer(*path, key)
        if backend == "xgrammar" and (combo := _xgrammar_string_combo(node)) is not None:
            return combo, pointer(*path)
        if backend == "xgrammar" and isinstance(node.get("pattern"), str):
            count = max(_repeat_counts(node["pattern"]), default=0)
            if count > XGRAMMAR_MAX_REPEAT:
                return f"{{{count}}}' (above {XGRAMMAR_MAX_REPEAT}) in 'pattern", pointer(*path, "pattern")
        for key, value in node.items():
            if key in DATA:
                continue
            if key in SCHEMA_MAPS and isinstance(value, dict):
                for name, sub in value.items():
                    if (found := walk(sub, (*path, key, name))) is not None:
                        return found
            elif isinstance(value, (dict, list)):
                if (found := walk(value, (*path, key))) is not None:
                    return found
        return None

    return walk(schema, ())


XGRAMMAR_MAX_REPEAT = 128
_COUNT = re.compile(r"\{(\d+)(?:,(\d*))?\}")


def _repeat_counts(pattern: str) -> list[int]:
    """The counts of a regex's ``{n}``, ``{n,}`` and ``{m,n}`` repetitions (not inside a
    character class, not escaped)."""
    counts: list[int] = []
    i, in_class = 0, False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if pattern.startswith("^]", i + 1) or pattern.startswith("]", i + 1):
                i = pattern.index("]", i + 1)  # a leading ']' is a member
        elif c == "{" and (m := _COUNT.match(pattern, i)):
            counts += [int(n) for n in m.groups() if n]
        i += 1
    return counts


def _xgrammar_string_combo(node: dict[str, Any]) -> str | None:
    """xgrammar builds a string from its ``format`` or its ``pattern`` alone: lengths beside
    either, and a pattern beside a format, are dropped (measured). A ``minLength`` of 1 beside
    a format holds anyway (no format matches the empty string)."""
    shaped = [k for k in ("format", "pattern") if k in node]
    if not shaped:
        return None
    lengths = [k for k in ("minLength", "maxLength") if k in node
               and not (k == "minLength" and "format" in node and node[k] <= 1)]
    if lengths:
        return f"{lengths[0]}' together with '{shaped[0]}"
    if len(shaped) == 2:
        return "pattern' together with 'format"
    return None


def for_generation(schema: Any, backend: str, param: str) -> Any:
    """The schema ``backend`` generates with (``closed_objects``), or a 400 naming the first
    keyword it would not enforce. What is accepted is remembered per schema (a repeat costs a
    lookup); a refusal is not remembered."""
    def closed(s: Any) -> Any:
        found = unenforced(s, backend)
        if found is not None:
            keyword, where = found
            raise InvalidRequest(
                f"The JSON schema uses '{keyword}' (at {where}), which this model's structured-"
                f"output backend ({backend}) cannot enforce; remove it or express it with the "
                "supported keywords (see the README's \"Structured outputs\").",
                param=param, code="unsupported_schema_keyword")
        return closed_objects(s)

    return schemas.derived(f"generation/{backend}", schema, closed)


def closed_objects(schema: Any) -> Any:
    """``schema`` with ``additionalProperties: false`` wherever ``properties`` are listed and
    ``additionalProperties`` is not said (a copy; data keywords untouched). The members of an
    ``allOf`` describe one object together and stay open."""
    def close(node: dict[str, Any], keyword: str | None) -> dict[str, Any]:
        if keyword != "allOf" and isinstance(node.get("properties"), dict) and not (
                {"additionalProperties", "patternProperties", "unevaluatedProperties", "allOf"}
                & node.keys()):
            node["additionalProperties"] = False
        return node

    return rebuild(schema, close)
