"""JSON-schema checks for response formats, ``structured_outputs.json`` and tool parameters.

Checking a schema against the JSON-Schema meta-schema is pure Python, and clients resend the same
schemas and tools on every turn. So:

- the 2020-12 meta-schema is checked in one flat piece: its seven vocabulary meta-schemas, joined
  by ``allOf`` and ``$dynamicRef``, are merged into one schema with plain ``$ref``s (the same
  verdicts, ~5x faster: 45 ms instead of 240 ms for a 35 KB schema);
- each outcome (valid, or the reason it is not) is cached under the schema's canonical JSON
  (keys sorted): a schema seen before costs one serialisation and a dictionary lookup;
- ``precheck`` runs the checks a request still needs in a worker thread before the request is
  prepared, so a new big schema never holds the event loop (other requests, ``/health``);
- mistral-common checks every tool's schema again (Draft 7) each time it encodes a request; its
  validator is taught to remember the tools that passed (``remember_tool_checks``).

The engine caches its compiled grammars itself (xgrammar's compiler cache; llguidance builds
matchers lazily), see docs/performance.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from jsonschema_specifications import REGISTRY

from server.protocol import ChatCompletionRequest

log = logging.getLogger(__name__)


class _Recent(OrderedDict):
    """A bounded memory: past ``limit`` entries, the least recently used go first."""

    def __init__(self, limit: int = 1024) -> None:
        super().__init__()
        self.limit = limit

    def recall(self, key: bytes) -> bool:
        """Whether ``key`` is remembered (and now the most recently used)."""
        if key not in self:
            return False
        self.move_to_end(key)
        return True

    def keep(self, key: bytes, value: Any = None) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


_outcomes = _Recent()  # canonical schema JSON → None (valid) or what is wrong with it

_DRAFT = "https://json-schema.org/draft/2020-12/"
_LOCAL_DEF = re.compile(r"^(?:meta/[a-z-]+)?#/\$defs/(\w+)$")
_HEADER = {"$schema", "$id", "$vocabulary", "$dynamicAnchor", "title", "type", "$comment"}


def _flat(node: Any) -> Any:
    """References of a vocabulary meta-schema, rewritten for the merged one."""
    if isinstance(node, list):
        return [_flat(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key == "$dynamicRef":
            if value != "#meta":
                raise RuntimeError(f"unexpected dynamic reference in the 2020-12 meta-schema: {value}")
            out["$ref"] = "#"  # "any schema": the merged root
        elif key == "$ref":
            match = _LOCAL_DEF.match(value)
            if match is None:
                raise RuntimeError(f"unexpected reference in the 2020-12 meta-schema: {value}")
            out["$ref"] = f"#/$defs/{match.group(1)}"
        else:
            out[key] = _flat(value)
    return out


@lru_cache(maxsize=1)
def meta_validator() -> Draft202012Validator:
    """The 2020-12 meta-schema as one schema: every vocabulary's keywords and $defs side by side.
    Built at start-up (``ChatService``), so a changed meta-schema fails there, not per request."""
    top = REGISTRY.contents(_DRAFT + "schema")
    merged: dict[str, Any] = {"type": ["object", "boolean"], "properties": {}, "$defs": {}}
    for part in [top, *(REGISTRY.contents(_DRAFT + ref["$ref"]) for ref in top["allOf"])]:
        unknown = set(part) - _HEADER - {"properties", "$defs"} - ({"allOf"} if part is top else set())
        if unknown or part["type"] != ["object", "boolean"]:
            raise RuntimeError(f"unexpected 2020-12 meta-schema shape: {sorted(unknown)}")
        for section in ("properties", "$defs"):
            for name, value in part.get(section, {}).items():
                if name in merged[section]:
                    raise RuntimeError(f"2020-12 meta-schemas both define {section}.{name}")
                merged[section][name] = _flat(value)
    return Draft202012Validator(merged, format_checker=Draft202012Validator.FORMAT_CHECKER)


def _key(schema: Any, *, sort: bool = True) -> bytes | None:
    """The schema's canonical JSON (keys sorted unless ``sort`` is false: key order matters
    where the schema is generated from); None if it has none (checked every time)."""
    try:
        return orjson.dumps(schema, option=orjson.OPT_SORT_KEYS if sort else None)
    except orjson.JSONEncodeError:  # deeper than orjson goes, integers over 64 bits, ...
        pass
    try:
        return json.dumps(schema, sort_keys=sort, allow_nan=False, ensure_ascii=False,
                          separators=(",", ":")).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError, RecursionError):
        return None


def _outcome(schema: Any) -> str | None:
    """None if ``schema`` is a valid JSON schema, otherwise what is wrong with it."""
    if not isinstance(schema, dict):
        return "the schema must be a JSON object"
    try:
        error = best_match(meta_validator().iter_errors(schema))
    except RecursionError:
        return "the schema is nested too deeply"
    return None if error is None else str(error.message)


def problem(schema: Any) -> str | None:
    """What is wrong with ``schema`` (None: nothing), cached."""
    key = _key(schema)
    if key is None:
        return _outcome(schema)
    if _outcomes.recall(key):
        return _outcomes[key]
    outcome = _outcome(schema)
    _outcomes.keep(key, outcome)
    return outcome


_derived = _Recent()


def derived(kind: str, schema: Any, compute: Callable[[Any], Any]) -> Any:
    """``compute(schema)``, remembered per ``kind`` and schema, key order included (treat the
    value as read-only): what a request derives from a schema costs nothing the next time."""
    key = _key(schema, sort=False)
    if key is None:
        return compute(schema)
    key = kind.encode() + b"\0" + key
    if _derived.recall(key):
        return _derived[key]
    value = compute(schema)
    _derived.keep(key, value)
    return value


def request_schemas(req: ChatCompletionRequest) -> list[Any]:
    """Every JSON schema the request carries: response format, structured_outputs.json, tools."""
    found: list[Any] = []
    rf = req.response_format
    if rf is not None and rf.type == "json_schema" and rf.json_schema is not None \
            and rf.json_schema.schema_ is not None:
        found.append(rf.json_schema.schema_)
    so = req.structured_outputs
    if so is not None and so.json_ is not None:
        value = so.json_
        if isinstance(value, str):
            try:
                value = orjson.loads(value)
            except orjson.JSONDecodeError:
                value = None  # reported by the constraint check
        if value is not None:
            found.append(value)
    for tool in req.tools or []:
        if tool.function.parameters is not None:
            found.append(tool.function.parameters)
    return found


async def precheck(req: ChatCompletionRequest) -> None:
    """Check the request's schemas not seen before in a worker thread, caching the outcomes."""
    todo: dict[bytes, Any] = {}
    for schema in request_schemas(req):
        key = _key(schema)
        if key is not None and key not in _outcomes:
            todo[key] = schema
    if not todo:
        return
    outcomes = await asyncio.to_thread(lambda: {key: _outcome(s) for key, s in todo.items()})
    for key, outcome in outcomes.items():  # the cache is only written on the event loop
        _outcomes.keep(key, outcome)


def remember_tool_checks(tokenizer: Any) -> None:
    """Make a mistral-common tokenizer check each distinct tool (name + schema) only once.

    Its request validator re-runs jsonschema's Draft 7 meta-schema check on every tool of every
    request (~2.5 ms for a small tool, far more for big ones, on the event loop). Tools that
    passed are remembered; anything new or changed is checked exactly as before."""
    validator = getattr(tokenizer, "_chat_completion_request_validator", None)
    base = type(validator)
    if validator is None or not callable(getattr(base, "_validate_function", None)):
        log.warning("mistral-common's request validator changed shape; tool schemas are "
                    "checked on every request")
        return
    passed = _Recent()

    class RememberingValidator(base):  # type: ignore[misc, valid-type]
        def _validate_function(self, function: Any) -> None:
            key = _key([function.name, function.parameters])
            if key is not None and passed.recall(key):
                return
            super()._validate_function(function)
            if key is not None:
                passed.keep(key)

    RememberingValidator.__name__ = RememberingValidator.__qualname__ = f"Remembering{base.__name__}"
    validator.__class__ = RememberingValidator
