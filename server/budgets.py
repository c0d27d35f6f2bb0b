"""Input budgets: what one request may cost, checked while it is parsed.

Every client is treated as hostile, so everything a request makes the server hold or compute
in proportion to what it sent is bounded here, before any work starts:

- the body (``max_body_bytes``, ``BodyLimit``) and its JSON: at most ``max_json_values``
  values (counted before parsing as the commas and brackets in the text, an upper bound that
  costs one pass in C), nested at most ``max_json_depth`` levels — the same for every
  client-supplied structure: messages, items, schemas, tool parameters, metadata, and JSON
  carried inside strings (``structured_outputs.json``);
- each JSON schema (response format, ``structured_outputs``, tool parameters) at most
  ``max_schema_bytes`` as compact JSON, and at most ``max_tools`` tools;
- stop strings: at most ``max_stop_strings`` of at most ``max_stop_chars`` characters.

A request over a budget is a 400 in the usual envelope whose ``param`` names the field and
whose ``code`` names the budget. Big bodies are parsed in a worker thread, so one request
never holds the event loop for long.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from server.errors import InvalidRequest

if TYPE_CHECKING:
    from server.protocol import ChatCompletionRequest

# Bodies with more values than this are parsed (and validated) in a worker thread.
THREAD_VALUES = 20_000


@dataclass(frozen=True, slots=True)
class Budgets:
    json_depth: int = 64
    json_values: int = 200_000
    schema_bytes: int = 256 * 1024
    tools: int = 128
    stop_strings: int = 16
    stop_chars: int = 1000

    @classmethod
    def from_settings(cls, settings: Any) -> "Budgets":
        return cls(json_depth=settings.max_json_depth, json_values=settings.max_json_values,
                   schema_bytes=settings.max_schema_bytes, tools=settings.max_tools,
                   stop_strings=settings.max_stop_strings, stop_chars=settings.max_stop_chars)


DEFAULT = Budgets()


def over(message: str, *, param: str | None, code: str) -> InvalidRequest:
    return InvalidRequest(message, param=param, code=code)


def value_count(raw: bytes | str) -> int:
    """An upper bound of the JSON values in ``raw`` (each value but the first follows a comma
    or opens a container, strings included), in C-speed passes."""
    if isinstance(raw, str):
        return raw.count(",") + raw.count("[") + raw.count("{")
    return raw.count(b",") + raw.count(b"[") + raw.count(b"{")


def loads(raw: bytes | str, budgets: Budgets, *, param: str | None = None,
          what: str = "The request body") -> Any:
    """JSON text → value, within the value and depth budgets (``param``: where the text came
    from, None for the body). Invalid JSON is a 400 ``invalid_json``."""
    if value_count(raw) > budgets.json_values:
        raise over(f"{what} holds more than {budgets.json_values:,} JSON values, this server's "
                   "limit (max_json_values).", param=param, code="json_too_large")
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "depth" in str(exc).lower() or "recursion" in str(exc).lower():
            raise over(f"{what} is nested more than {budgets.json_depth} levels deep, this "
                       "server's limit (max_json_depth).", param=param, code="json_too_deep") from None
        raise InvalidRequest(f"{what} is not valid JSON.", param=param, code="invalid_json") from None
    check_depth(value, budgets.json_depth, param=param, what=what, inside=param is not None)
    return value


def check_depth(value: Any, limit: int, *, param: str | None = None,
                what: str = "The request body", inside: bool = False) -> None:
    """A 400 ``json_too_deep`` naming the deepest field if ``value`` nests deeper than
    ``limit`` containers (iterative: any depth is safe to check). ``inside``: ``value`` came
    from a string field (``param``), which the error names; the path within it is in the
    message."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            where = _path_to_depth(value, limit + 1, param)
            raise over(f"{what} is nested more than {limit} levels deep (at '{where}'), this "
                       "server's limit (max_json_depth).",
                       param=param if inside else where or param, code="json_too_deep")
        if type(node) is dict:
            stack.extend((v, depth + 1) for v in node.values() if type(v) in (dict, list))
        elif type(node) is list:
            stack.extend((v, depth + 1) for v in node if type(v) in (dict, list))


SHOWN_SEGMENTS = 6  # how much of a too-deep path the error names


def _path_to_depth(value: Any, depth: int, base: str | None) -> str:
    """The path (``a.b[0].c``) to a container at ``depth``, its first segments only."""
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(value, 1, ())]
    while stack:
        node, level, path = stack.pop()
        if level >= depth:
            return join_path(path[:SHOWN_SEGMENTS], base)
        items = node.items() if type(node) is dict else enumerate(node)
        stack.extend((v, level + 1, (*path, k)) for k, v in items if type(v) in (dict, list))
    return base or ""


class Schema(dict):  # type: ignore[type-arg]
    """A client's JSON schema, with the digest and size of its compact JSON: serialised once,
    when the request is parsed (the schema caches key on the digest)."""

    __slots__ = ("digest", "size")
    digest: bytes
    size: int


def schema(value: Any, budgets: Budgets, *, param: str) -> Any:
    """``value`` (a client's JSON schema) as a ``Schema``, within ``max_schema_bytes``; what is
    not an object is returned as it is (the schema checks refuse it by name)."""
    if not isinstance(value, dict) or isinstance(value, Schema):
        return value
    try:
        text = orjson.dumps(value)
    except orjson.JSONEncodeError:  # only integers beyond 64 bits get here after the depth check
        raise InvalidRequest("The JSON schema holds a number this server cannot represent "
                             "(integers are limited to 64 bits).", param=param,
                             code="invalid_value") from None
    if len(text) > budgets.schema_bytes:
        raise over(f"The JSON schema is {len(text):,} bytes as compact JSON; this server accepts "
                   f"at most {budgets.schema_bytes:,} (max_schema_bytes).", param=param,
                   code="schema_too_large")
    out = Schema(value)
    out.digest = hashlib.blake2b(text, digest_size=16).digest()
    out.size = len(text)
    return out


def check_budgets(req: ChatCompletionRequest, budgets: Budgets) -> None:
    """Tools, stop strings and schemas within the server's input budgets (``server.budgets``);
    each schema is serialised here, once, for its size and the digest the caches key on."""
    if req.tools is not None and len(req.tools) > budgets.tools:
        raise over(f"The request has {len(req.tools)} tools; this server accepts at most "
                   f"{budgets.tools} (max_tools).", param="tools", code="too_many_tools")
    stops = [req.stop] if isinstance(req.stop, str) else (req.stop or [])
    if len(stops) > budgets.stop_strings:
        raise over(f"The request has {len(stops)} stop strings; this server accepts at most "
                   f"{budgets.stop_strings} (max_stop_strings).", param="stop",
                   code="too_many_stop_strings")
    for i, stop in enumerate(stops):
        if len(stop) > budgets.stop_chars:
            raise over(f"A stop string is {len(stop):,} characters long; this server accepts at "
                       f"most {budgets.stop_chars:,} (max_stop_chars).",
                       param="stop" if isinstance(req.stop, str) else f"stop[{i}]",
                       code="stop_too_long")
    rf = req.response_format
    if rf is not None and rf.json_schema is not None:
        rf.json_schema.schema_ = schema(rf.json_schema.schema_, budgets,
                                        param="response_format.json_schema.schema")
    so = req.structured_outputs
    if so is not None and so.json_ is not None:
        param = "structured_outputs.json"
        if isinstance(so.json_, str):  # JSON inside a string: the same budgets as the body
            so.json_ = loads(so.json_, budgets, param=param, what="The JSON schema")
        so.json_ = schema(so.json_, budgets, param=param)
    for i, tool in enumerate(req.tools or []):
        tool.function.parameters = schema(tool.function.parameters, budgets,
                                          param=f"tools[{i}].function.parameters")


def join_path(path: tuple[str | int, ...], base: str | None = None) -> str:
    out = base or ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out
