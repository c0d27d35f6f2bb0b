"""JSON-schema checks for response formats, ``structured_outputs.json`` and tool parameters.

Checking a schema against the JSON-Schema meta-schema is pure Python, and clients resend the same
schemas and tools on every turn. So:

- the 2020-12 meta-schema is checked in one flat piece: its seven vocabulary meta-schemas, joined
  by ``allOf`` and ``$dynamicRef``, are merged into one schema with plain ``$ref``s (the same
  verdicts, ~5x faster: 45 ms instead of 240 ms for a 35 KB schema);
- what is remembered (valid schemas, what generation derives from them, tools mistral-common
  accepted) lives in one ``Memory`` bounded in bytes (``schema_cache_bytes``), keyed by a
  digest of the schema's compact JSON. The JSON is serialised once per request, when the
  request is parsed (``server.budgets``: it also checks the schema's size). Refusals are never
  remembered: a client sending distinct bad schemas costs CPU in a worker thread, not memory;
- ``precheck`` runs the checks a request still needs in a worker thread before the request is
  prepared, so a new big schema never holds the event loop (other requests, ``/health``);
- mistral-common checks every tool's schema again (Draft 7) each time it encodes a request; its
  validator is taught to remember the tools that passed (``remember_tool_checks``).

The engine caches its compiled grammars itself (xgrammar's compiler cache; llguidance builds
matchers lazily), see docs/performance.md.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from jsonschema_specifications import REGISTRY

from server.errors import InvalidRequest
from server.protocol import ChatCompletionRequest

log = logging.getLogger(__name__)


ENTRY_COST = 256  # bytes a remembered verdict costs (digest, tuple, dict slot)
COPY_FACTOR = 8  # bytes a parsed copy of a schema costs per byte of its compact JSON


class Memory:
    """What is derived from schemas, bounded in bytes: past ``budget``, the least recently used
    entries go first. Keys are digests, never schema text. Safe from several threads."""

    def __init__(self, budget: int = 64 * 1024 * 1024) -> None:
        self.budget = budget
        self.used = 0
        self._entries: OrderedDict[bytes, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def recall(self, key: bytes) -> tuple[bool, Any]:
        """(found, value); a found entry becomes the most recently used."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return False, None
            self._entries.move_to_end(key)
            return True, entry[0]

    def keep(self, key: bytes, value: Any = None, cost: int = ENTRY_COST) -> None:
        if cost > self.budget:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self.used -= old[1]
            self._entries[key] = (value, cost)
            self.used += cost
            while self.used > self.budget:
                _, (_, freed) = self._entries.popitem(last=False)
                self.used -= freed


_memory = Memory()


def configure(budget: int) -> None:
    """The memory budget (``schema_cache_bytes``); 0 turns remembering off."""
    global _memory
    _memory = Memory(budget)


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


def digest(schema: Any) -> bytes | None:
    """The digest of ``schema``'s compact JSON (key order included): computed once per request
    where the request was parsed (``budgets.Schema``), else here; None if it has no JSON form."""
    known = getattr(schema, "digest", None)
    if known is not None:
        return known
    try:
        return _hash(orjson.dumps(schema))
    except orjson.JSONEncodeError:  # deeper than orjson goes, integers over 64 bits, ...
        pass
    try:
        return _hash(json.dumps(schema, allow_nan=False, ensure_ascii=False,
                                separators=(",", ":")).encode("utf-8", "surrogatepass"))
    except (TypeError, ValueError, RecursionError):
        return None


def _hash(text: bytes) -> bytes:
    return hashlib.blake2b(text, digest_size=16).digest()


def _size(schema: Any) -> int:
    size = getattr(schema, "size", None)
    return size if size is not None else len(orjson.dumps(schema, default=str))


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
    """What is wrong with ``schema`` (None: nothing). Valid schemas are remembered; refused
    ones are not (a client sending distinct bad schemas must not fill the server's memory)."""
    key = digest(schema)
    if key is not None and _memory.recall(b"valid" + key)[0]:
        return None
    outcome = _outcome(schema)
    if outcome is None and key is not None:
        _memory.keep(b"valid" + key)
    return outcome


def derived(kind: str, schema: Any, compute: Callable[[Any], Any]) -> Any:
    """``compute(schema)``, remembered per ``kind`` and schema, key order included (treat the
    value as read-only): what a request derives from a schema costs nothing the next time.
    What ``compute`` raises (a refusal) is raised and nothing is remembered."""
    key = digest(schema)
    if key is None:
        return compute(schema)
    key = kind.encode() + b"\0" + key
    found, value = _memory.recall(key)
    if found:
        return value
    value = compute(schema)
    _memory.keep(key, value, ENTRY_COST + COPY_FACTOR * _size(schema))
    return value


def request_schemas(req: ChatCompletionRequest) -> list[tuple[str, str, Any]]:
    """(param, how an error names it, schema) of every JSON schema the request carries:
    response format, structured_outputs.json (already parsed when it came as a string), tools."""
    found: list[tuple[str, str, Any]] = []
    rf = req.response_format
    if rf is not None and rf.type == "json_schema" and rf.json_schema is not None \
            and rf.json_schema.schema_ is not None:
        found.append(("response_format.json_schema.schema", "Invalid JSON schema",
                      rf.json_schema.schema_))
    so = req.structured_outputs
    if so is not None and isinstance(so.json_, dict):
        found.append(("structured_outputs.json", "Invalid JSON schema", so.json_))
    for i, tool in enumerate(req.tools or []):
        if tool.function.parameters is not None:
            found.append((f"tools[{i}].function.parameters",
                          f"Invalid JSON schema for tool {tool.function.name!r}",
                          tool.function.parameters))
    return found


async def precheck(req: ChatCompletionRequest) -> None:
    """Check the request's schemas not known to be valid, in a worker thread; the first invalid
    one is a 400 naming it."""
    todo = [(param, label, schema) for param, label, schema in request_schemas(req)
            if (key := digest(schema)) is None or b"valid" + key not in _memory]
    if not todo:
        return
    found = await asyncio.to_thread(lambda: [(p, label, problem(s)) for p, label, s in todo])
    for param, label, outcome in found:
        if outcome is not None:
            raise InvalidRequest(f"{label}: {outcome}.", param=param)


_TOKENIZERS = itertools.count()
_TOOL_DIGESTS: ContextVar[dict[str, bytes]] = ContextVar("tool_digests", default={})


@contextmanager
def known_tools(req: ChatCompletionRequest) -> Iterator[None]:
    """While rendering ``req``: tell the tool-check memory (``remember_tool_checks``) the
    digests of its tool schemas, so mistral-common's copies of them are recognised without
    serialising them again."""
    known = {}
    for tool in req.tools or []:
        key = digest(tool.function.parameters or {"type": "object", "properties": {}})
        if key is not None:
            known[tool.function.name] = key
    token = _TOOL_DIGESTS.set(known)
    try:
        yield
    finally:
        _TOOL_DIGESTS.reset(token)


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
    prefix = f"tool\0{next(_TOKENIZERS)}\0".encode()  # what one tokenizer accepted

    class RememberingValidator(base):  # type: ignore[misc, valid-type]
        def _validate_function(self, function: Any) -> None:
            schema = _TOOL_DIGESTS.get().get(function.name)
            key = None if schema is None else prefix + function.name.encode() + b"\0" + schema
            if key is not None and _memory.recall(key)[0]:
                return
            super()._validate_function(function)
            if key is not None:
                _memory.keep(key)

    RememberingValidator.__name__ = RememberingValidator.__qualname__ = f"Remembering{base.__name__}"
    validator.__class__ = RememberingValidator
