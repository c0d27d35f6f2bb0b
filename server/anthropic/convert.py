"""A Messages API request as one chat-completions request (and chat errors back in its terms).

Anthropic's request becomes a chat request that goes through ``parse_request`` and
``ChatService.prepare`` like any other (rendering, images, tools, constraints and sampling are
not copied):

- ``system`` (text or text blocks) → the system message; text blocks are joined by blank lines;
- user and assistant turns → chat messages (``blocks.py``: tool results, images, tool-use ids);
- a ``system`` message inside ``messages`` → a system message where Mistral prompts allow one
  (at the start, after a user turn; one at the very end goes before the last user turn), else
  the same text as the user's;
- ``tools`` / ``tool_choice`` (``any`` = a forced call, ``tool`` = that one,
  ``disable_parallel_tool_use`` = one call) / ``stop_sequences`` / ``output_config.format`` /
  ``thinking`` → their chat counterparts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.anthropic.blocks import Conversion, UserTurn, assistant_turn, text_of
from server.anthropic.params import rename
from server.anthropic.protocol import MessagesRequest, MessageToolChoice, ToolDefinition, check
from server.errors import APIError, InvalidRequest
from server.model import ModelInfo
from server.budgets import DEFAULT, Budgets
from server.protocol import ChatCompletionRequest, parse_request


@dataclass(frozen=True)
class Converted:
    chat: ChatCompletionRequest
    conversion: Conversion
    show_thinking: bool  # thinking blocks carry their text (not display: omitted)


def _order(messages: list[Any]) -> list[int]:
    """The messages' indices in prompt order. System messages at the very end (Claude Code
    sends one after the user's) go before the last user message, so that the prompt ends with
    the user's turn, where Mistral models answer — unless that message answers tool calls."""
    k = len(messages)
    while k and isinstance(messages[k - 1], dict) and messages[k - 1].get("role") == "system":
        k -= 1
    last = messages[k - 1] if k else None
    if k == len(messages) or not isinstance(last, dict) or last.get("role") != "user":
        return list(range(len(messages)))
    blocks = last.get("content") if isinstance(last.get("content"), list) else []
    if any(isinstance(b, dict) and b.get("type") == "tool_result" for b in blocks):
        return list(range(len(messages)))
    return [*range(k - 1), *range(k, len(messages)), k - 1]


def _messages(conv: Conversion, req: MessagesRequest) -> None:
    if req.system is not None:
        conv.add({"role": "system", "content": text_of(req.system, "system")}, "system")
    pending: dict[str, str] = {}  # tool uses of the previous assistant turn
    for i in _order(req.messages):
        raw = req.messages[i]
        path = f"messages.{i}"
        if not isinstance(raw, dict):
            raise InvalidRequest("Input should be an object.", param=path, code="invalid_type")
        role, content = raw.get("role"), raw.get("content")
        if "content" not in raw:
            raise InvalidRequest("Field required.", param=f"{path}.content",
                                 code="missing_required_parameter")
        if role == "user":
            turn = UserTurn(conv, i, pending)
            if isinstance(content, str):
                turn.text(content, path)
            elif isinstance(content, list) and content:
                for j, block in enumerate(content):
                    turn.block(block, f"{path}.content.{j}")
            else:
                raise InvalidRequest("Input should be a string or a non-empty list of content "
                                     "blocks.", param=f"{path}.content", code="invalid_type")
            turn.close()
            pending = {}
            continue
        if pending:
            UserTurn(conv, i, pending).close()  # the tool uses went unanswered: a 400
        if role == "assistant":
            pending = assistant_turn(conv, content, i)
        elif role == "system":
            # Mistral prompts hold system prompts at the start or after a user turn only: later
            # (after the assistant or tool results) the text comes as the user's
            where = "system" if not conv.messages or conv.messages[-1]["role"] in ("system", "user") else "user"
            conv.add({"role": where, "content": text_of(content, f"{path}.content")}, path)
        else:
            raise InvalidRequest(f"Input should be 'user' or 'assistant'; got {role!r}.",
                                 param=f"{path}.role", code="invalid_value")
    if pending and conv.messages[-1].get("tool_calls"):
        raise InvalidRequest("The last message has `tool_use` blocks: send their `tool_result` "
                             "blocks in a user message before asking for the next turn.",
                             param=f"messages.{len(req.messages) - 1}")


def _tools(req: MessagesRequest) -> list[dict[str, Any]]:
    tools = []
    for i, raw in enumerate(req.tools or []):
        if isinstance(raw, dict) and raw.get("type") not in (None, "custom"):
            raise InvalidRequest(f"Tools of type {raw.get('type')!r} are Anthropic's server tools, "
                                 "which this server does not run; declare client tools (name, "
                                 "description, input_schema).", param=f"tools.{i}.type",
                                 code="unsupported_tool")
        tool = check(ToolDefinition, raw, f"tools.{i}")
        function = {"name": tool.name, "parameters": tool.input_schema}
        if tool.description is not None:
            function["description"] = tool.description
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(choice: MessageToolChoice) -> dict[str, Any]:
    fields: dict[str, Any] = {"parallel_tool_calls": not choice.disable_parallel_tool_use}
    if choice.type == "tool":
        fields["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
    else:
        fields["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
    return fields


def _thinking(req: MessagesRequest, model: ModelInfo) -> dict[str, Any]:
    """``thinking`` as the chat fields that turn a reasoning model's thinking on or off.

    Not given: the model's own habit (a reasoning model thinks, and its thinking is returned).
    On (``enabled``, ``adaptive``, ``between_tools``): ``reasoning_effort: high`` where the
    tokenizer has model settings (v15+), else the preset's reasoning system prompt if it has one.
    ``budget_tokens`` bounds the thinking where the tokenizer has ``[THINK]`` control tokens: the
    engine writes ``[/THINK]`` once the thinking reaches it (``thinking_token_budget``).
    ``disabled``: ``reasoning_effort: none`` (v15+), else ``[THINK]`` is made unreachable
    (``logit_bias``), and thinking text is dropped from the answer in any case. Models that do
    not reason ignore it, as Anthropic documents for models without thinking.
    """
    thinking = req.thinking
    if thinking is None or not model.reasoning:
        return {}
    version = model.tokenizer.instruct_tokenizer.tokenizer.version
    settings = bool(getattr(version, "supports_model_settings", False))
    if thinking.type != "disabled":
        on: dict[str, Any] = {"reasoning_effort": "high"} if settings else \
            {"prompt_mode": "reasoning"} if model.reasoning_system_prompt else {}
        if thinking.budget_tokens is not None and model.think_token_ids is not None:
            on["thinking_token_budget"] = thinking.budget_tokens  # the engine ends thinking
        return on
    fields: dict[str, Any] = {"include_reasoning": False}
    think = model.vocab.special_id("[THINK]")
    if settings:
        fields["reasoning_effort"] = "none"
    elif think is not None:
        fields["logit_bias"] = {str(think): -100}
    return fields


def chat_body(req: MessagesRequest, conv: Conversion, model: ModelInfo, *,
              accept_claude_models: bool) -> dict[str, Any]:
    name = req.model
    if accept_claude_models and name.startswith("claude-"):
        name = model.id
    body: dict[str, Any] = {
        **req.extras,
        "model": name, "messages": conv.messages, "max_tokens": req.max_tokens,
        "temperature": req.temperature, "top_p": req.top_p, "top_k": req.top_k,
        "stop": req.stop_sequences or None, "stream": req.stream,
        "user": req.metadata.user_id if req.metadata else None,
        **_thinking(req, model),
    }
    tools = _tools(req)
    if tools:
        body["tools"] = tools
        if req.tool_choice is not None:
            body.update(_tool_choice(req.tool_choice))
    elif req.tool_choice is not None and req.tool_choice.type in ("any", "tool"):
        raise InvalidRequest(f"'tool_choice' {req.tool_choice.type!r} needs 'tools'.",
                             param="tool_choice.type")
    schema = req.output_schema
    if schema is not None:
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "output", "schema": schema, "strict": True}}
    return {k: v for k, v in body.items() if v is not None}


def to_chat(req: MessagesRequest, model: ModelInfo, *, accept_claude_models: bool = False,
            budgets: Budgets = DEFAULT) -> Converted:
    """The chat request for ``req``; raises 4xx errors with Anthropic params."""
    conv = Conversion()
    _messages(conv, req)
    body = chat_body(req, conv, model, accept_claude_models=accept_claude_models)
    try:
        chat = parse_request(body, budgets=budgets)
    except APIError as err:
        raise rename(err, conv) from None
    chat._fit_max_tokens = True
    show = not (req.thinking is not None and req.thinking.display == "omitted")
    return Converted(chat, conv, show)
