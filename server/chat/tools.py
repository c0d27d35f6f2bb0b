"""``tool_choice`` "required" / named, enforced by constrained decoding in the engine.

The forced output is the model's own native call format, so the same Mistral parser reads it:

- v11+ (Tekken, ``[TOOL_CALLS]name[ARGS]{json}``): a Lark grammar for llguidance that names the
  special tokens by id, lists the allowed names literally and embeds each tool's parameter schema
  with compact JSON (no free whitespace). No text may come before the call.
- pre-v11 (``[TOOL_CALLS][{"name", "arguments"}]``): a JSON-schema constraint on the call array
  itself (xgrammar cannot emit SentencePiece control tokens); the parser is told the output *is*
  the call array (``calls_only``).

``parallel_tool_calls: false`` allows exactly one call, by the grammar.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from server.chat import schemas
from server.chat.enforce import for_generation
from server.chat.refs import pointer, relocate
from server.engine.base import Constraint
from server.errors import InvalidRequest
from server.model import ModelInfo
from server.protocol import ChatCompletionRequest, Tool


@dataclass(frozen=True, slots=True)
class ToolPlan:
    parse_tools: bool  # parse tool calls out of the output at all
    constraint: Constraint | None  # forced-call constraint, if any
    calls_only: bool  # the output is the call array itself (pre-v11 forced calls)


def _parameters(tool: Tool, index: int) -> dict[str, Any]:
    schema = tool.function.parameters or {"type": "object", "properties": {}}
    problem = schemas.problem(schema)
    if problem is not None:
        raise InvalidRequest(f"Invalid JSON schema for tool {tool.function.name!r}: {problem}.",
                             param=f"tools[{index}].function.parameters")
    return schema


def validate_tools(req: ChatCompletionRequest) -> None:
    if req.tools is not None and len(req.tools) == 0:
        raise InvalidRequest("'tools' must not be an empty list; omit it instead.", param="tools")
    if req.tool_choice is not None and not req.tools:
        raise InvalidRequest("'tool_choice' requires 'tools' to be set.", param="tool_choice")
    names = [t.function.name for t in req.tools or []]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise InvalidRequest(f"Duplicate tool name {name!r}.", param=f"tools[{i}].function.name")
    for i, tool in enumerate(req.tools or []):
        _parameters(tool, i)
    if req.tool_choice is not None and not isinstance(req.tool_choice, str):
        if req.tool_choice.function.name not in names:
            raise InvalidRequest(
                f"'tool_choice' names the function {req.tool_choice.function.name!r}, which is "
                f"not among the declared tools ({', '.join(sorted(names))}).",
                param="tool_choice.function.name")


def _forced_tools(req: ChatCompletionRequest, backend: str) -> list[tuple[Tool, dict[str, Any]]]:
    """The tools a forced call may name, each with the parameter schema to generate with."""
    assert req.tools and req.tool_choice is not None
    named = None if isinstance(req.tool_choice, str) else req.tool_choice.function.name
    out = []
    for i, tool in enumerate(req.tools):
        if named is None or tool.function.name == named:
            param = f"tools[{i}].function.parameters"
            out.append((tool, for_generation(_parameters(tool, i), backend, param)))
    return out


def _compact(schema: dict[str, Any]) -> dict[str, Any]:
    guidance = {**schema.get("x-guidance", {}), "whitespace_flexible": False}
    return {**schema, "x-guidance": guidance}


def v11_grammar(tools: list[tuple[Tool, dict[str, Any]]], model: ModelInfo, *, parallel: bool) -> str:
    """Lark (llguidance) grammar: one or more ``[TOOL_CALLS]name[ARGS]{json}`` calls, nothing else."""
    tc, args = model.vocab.special_id("[TOOL_CALLS]"), model.vocab.special_id("[ARGS]")
    lines = [f"start: {'fcall+' if parallel else 'fcall'}",
             "fcall: " + " | ".join(f"f{i}" for i in range(len(tools)))]
    for i, (tool, parameters) in enumerate(tools):
        schema = json.dumps(_compact(parameters), separators=(",", ":"))
        lines.append(f"f{i}: <[{tc}]> {json.dumps(tool.function.name)} <[{args}]> %json {schema}")
    return "\n".join(lines) + "\n"


def pre_v11_schema(tools: list[tuple[Tool, dict[str, Any]]], *, parallel: bool) -> dict[str, Any]:
    """JSON schema of the whole call array ``[{"name": …, "arguments": {…}}, …]``; each tool's
    local ``$ref``s are rewritten for the place its schema takes in it (``refs.relocate``)."""
    # Each tool's parameters live in the root's $defs (pointers through arrays such as
    # #/items/anyOf/0 are not followed by xgrammar), their own refs rewritten for that place.
    defs = {f"arguments_{i}": relocate(parameters, pointer("$defs", f"arguments_{i}"))
            for i, (_, parameters) in enumerate(tools)}
    variants = [{
        "type": "object",
        "properties": {"name": {"const": t.function.name},
                       "arguments": {"$ref": f"#/$defs/arguments_{i}"}},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    } for i, (t, _) in enumerate(tools)]
    schema: dict[str, Any] = {"$defs": defs, "type": "array", "minItems": 1,
                              "items": variants[0] if len(variants) == 1 else {"anyOf": variants}}
    if not parallel:
        schema["maxItems"] = 1
    return schema


def plan_tools(req: ChatCompletionRequest, model: ModelInfo, *, compact_json: bool) -> ToolPlan:
    validate_tools(req)
    if not req.tools or req.tool_choice == "none":
        return ToolPlan(parse_tools=False, constraint=None, calls_only=False)
    if req.tool_choice in (None, "auto"):
        return ToolPlan(parse_tools=True, constraint=None, calls_only=False)
    if req.response_format is not None and req.response_format.type != "text" or req.structured_outputs:
        raise InvalidRequest("A forced tool call ('tool_choice' required or named) cannot be "
                             "combined with 'response_format' or 'structured_outputs'.",
                             param="tool_choice")
    tools = _forced_tools(req, model.structured_backend)
    parallel = req.parallel_tool_calls and isinstance(req.tool_choice, str)
    if model.vocab.special_id("[ARGS]") is not None:
        grammar = v11_grammar(tools, model, parallel=parallel)
        return ToolPlan(True, Constraint("grammar", grammar, compact_json=compact_json), False)
    schema = pre_v11_schema(tools, parallel=parallel)
    return ToolPlan(True, Constraint("json", schema, compact_json=compact_json), True)
