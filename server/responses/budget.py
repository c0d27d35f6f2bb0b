"""What a response will store (and answer), serialised and checked before the engine runs.

Nothing after generation may fail on input. The canonical input items (when the response is to
be kept) and the response skeleton (every field but the output: instructions, tools, text
format, tool choice, metadata…, which the answer echoes whether kept or not) are serialised here,
once, with orjson — the serialiser the store and the stream use — and:

- a value orjson cannot write (nested deeper than ``FIELD_DEPTH``: orjson refuses documents
  deeper than ``MAX_DEPTH``, and a field sits a few levels down in one; a string
  with lone surrogates; an integer beyond 64 bits) is a 400 naming its field, code
  ``json_too_deep`` or ``invalid_value``;
- when the response is to be kept, their size against the record budget
  (``StoreLimits.record_budget``: ``responses_max_record_bytes``, or the per-key or global bytes
  when smaller) — over it is a 400 ``store_record_too_large`` naming the largest part. The
  output comes on top and is bounded by ``max_output_tokens``; the store always keeps an
  owner's newest record, so the write that follows cannot fail on size.

The encoded items go to the store as they are (not serialised a second time).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from server.errors import InvalidRequest

MAX_DEPTH = 254  # containers orjson writes nested (255 raises "Recursion limit reached")
# Containers above a field where it is written deepest (a stream event, its response, the tools
# list): each field is checked as if that deep, so the whole document is writable too.
WRAP = 3
FIELD_DEPTH = MAX_DEPTH - WRAP
# the request field each skeleton field comes from (tools and input items are named per entry)
FIELD_PARAMS = {"text": "text", "tool_choice": "tool_choice", "instructions": "instructions",
                "metadata": "metadata", "reasoning": "reasoning", "user": "user",
                "prompt_cache_key": "prompt_cache_key", "safety_identifier": "safety_identifier"}


def check(items: list[dict[str, Any]], skeleton: Mapping[str, Any],
          budget: tuple[int, str] | None, text_input: bool = False) -> bytes | None:
    """Raises a 400 for anything unwritable, or (with a ``budget``: the response is kept) over
    the budget; returns the items' JSON when they are to be stored. ``text_input``: the request's
    ``input`` was a string (its one item is named ``input``)."""
    sizes: list[tuple[int, str]] = []
    for key, value in skeleton.items():
        if key == "tools":
            sizes += [(len(encode(tool, ["tools", i])), f"tools[{i}]") for i, tool in enumerate(value)]
        elif key == "text" and isinstance(value, Mapping) and list(value) == ["format"]:
            sizes.append((len(encode(value["format"], ["text", "format"])), "text.format"))
        else:
            sizes.append((len(encode(value, [FIELD_PARAMS.get(key, key)])), FIELD_PARAMS.get(key, key)))
    if budget is None:
        return None
    paths: list[list[str | int]] = [["input"]] if text_input else [["input", i] for i in range(len(items))]
    encoded = [encode(item, path) for item, path in zip(items, paths)]
    sizes += [(len(data), _param(path)) for data, path in zip(encoded, paths)]
    limit, setting = budget
    total = sum(size for size, _ in sizes)
    if total > limit:
        size, param = max(sizes)
        raise InvalidRequest(
            f"This response would be stored with {total} bytes of input before any output, over "
            f"this server's limit of {limit} bytes for one stored response ({setting}); the "
            f"largest part is '{param}' ({size} bytes). Send a smaller input, or 'store': false "
            "to be answered without storing it.", param=param, code="store_record_too_large")
    return b"[" + b",".join(encoded) + b"]"


def encode(value: Any, path: list[str | int]) -> bytes:
    """``value`` as JSON, or the 400 naming the first part of it that cannot be written."""
    wrapped = value
    for _ in range(WRAP):
        wrapped = [wrapped]
    try:
        return orjson.dumps(wrapped)[WRAP:-WRAP]
    except TypeError:  # orjson.JSONEncodeError
        pass
    where, why = _unwritable(value, path)
    if why == "depth":
        raise InvalidRequest(f"'{_param(where)}' is nested more than {FIELD_DEPTH} levels deep, "
                             "deeper than this server keeps.", param=_param(where),
                             code="json_too_deep")
    raise InvalidRequest(f"'{_param(where)}' holds {why}, which JSON cannot carry.",
                         param=_param(where), code="invalid_value")


def _unwritable(value: Any, path: list[str | int]) -> tuple[list[str | int], str]:
    """Where in ``value`` (below ``path``) orjson fails, and why; walked without recursion."""
    stack: list[tuple[Any, list[str | int]]] = [(value, path)]
    while stack:
        node, where = stack.pop()
        if isinstance(node, (dict, list)) and len(where) - len(path) >= FIELD_DEPTH:
            return where[:len(path) + 1] if len(where) > len(path) else where, "depth"
        if isinstance(node, dict):
            for key, child in node.items():
                if not isinstance(key, str):
                    return where, "a key that is not a string"
                stack.append((child, [*where, key]))
        elif isinstance(node, list):
            stack.extend((child, [*where, i]) for i, child in enumerate(node))
        elif isinstance(node, str):
            try:
                node.encode()
            except UnicodeEncodeError:
                return where, "text that is not valid Unicode (a lone surrogate)"
        elif isinstance(node, int) and not isinstance(node, bool) and not -2**63 <= node < 2**64:
            return where, "an integer beyond 64 bits"
        elif node is not None and not isinstance(node, (bool, int, float)):
            return where, f"a value of type {type(node).__name__}"
    return path, "a value"


def _param(path: list[str | int]) -> str:
    """``["tools", 0, "parameters", "properties"]`` → ``tools[0].parameters.properties``; long
    paths are cut after six parts (the field is what matters, not the 200 levels below it)."""
    text = ""
    for part in path[:6]:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
