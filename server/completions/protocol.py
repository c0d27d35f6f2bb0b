"""Wire types of ``POST /v1/completions``, ``POST /tokenize`` and ``POST /detokenize``.

Same strictness policy as chat (``server/protocol.py``): unknown fields are ignored, fields we
know but do not support are a 400 naming them, ``null`` means "not given". The prompt (a string,
strings, token ids or lists of token ids) is checked here by hand, before pydantic, so that a
hostile one costs little and every mistake names its place (``prompt[2][5]``); the checks that
need the model (ids in the vocabulary, lengths against the context) are in ``service.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from server.budgets import DEFAULT, Budgets, check_budgets
from server.errors import ContextLengthExceeded, InvalidRequest
from server.protocol import (
    LEGACY_GUIDED,
    ResponseFormat,
    StreamOptions,
    StructuredOutputs,
    validation_error,
)

# vLLM completion fields we do not implement: a clear 400 beats silently different output
UNSUPPORTED = {
    "use_beam_search": "beam search is not supported",
    "prompt_embeds": "prompt embeddings are not supported; send text or token ids",
    "prompt_logprobs": "use 'echo' with 'logprobs' for the prompt's logprobs",
    "logprob_token_ids": "logprobs for chosen token ids are not supported",
    "allowed_token_ids": "use 'logit_bias' or 'structured_outputs' instead",
    "bad_words": "use 'logit_bias' instead",
    "truncate_prompt_tokens": "prompts are never truncated here; a prompt that does not fit is a 400",
    "return_tokens_as_token_ids": "token strings are always returned as text",
}

Prompt = str | list[str] | list[int] | list[list[int]]


def _is_id(value: Any) -> bool:
    return type(value) is int  # not bool


@dataclass(frozen=True, slots=True)
class PromptLimits:
    """How much prompt one request may send: prompts (each one choice or more) and token ids
    per prompt (the context length)."""

    max_prompts: int
    max_prompt_tokens: int


def _token_ids(item: list[Any], where: str, limits: PromptLimits) -> list[int]:
    if not item:
        raise InvalidRequest(f"'{where}' must not be empty.", param=where, code="invalid_value")
    if len(item) > limits.max_prompt_tokens:
        raise ContextLengthExceeded(
            f"'{where}' has {len(item)} tokens; this model's maximum context length is "
            f"{limits.max_prompt_tokens} tokens.", param=where)
    if not all(type(t) is int for t in item):  # one pass at C speed; find the culprit only if needed
        j = next(j for j, t in enumerate(item) if not _is_id(t))
        raise InvalidRequest(f"'{where}[{j}]' must be a token id (an integer).",
                             param=f"{where}[{j}]", code="invalid_type")
    return item


def prompt_list(value: Any, limits: PromptLimits, param: str = "prompt") -> list[str | list[int]]:
    """The prompts of a request: each a string or a list of token ids (400s name the place)."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        raise InvalidRequest(f"'{param}' must be a string, a list of strings, a list of token "
                             "ids or a list of token-id lists.", param=param, code="invalid_type")
    if not value:
        raise InvalidRequest(f"'{param}' must not be empty.", param=param, code="invalid_value")
    if not isinstance(value[0], (str, list)):
        return [_token_ids(value, param, limits)]
    if len(value) > limits.max_prompts:
        raise InvalidRequest(f"'{param}' holds {len(value)} prompts; this server takes at most "
                             f"{limits.max_prompts} in one request.", param=param,
                             code="invalid_value")
    out: list[str | list[int]] = []
    first = type(value[0])
    for i, item in enumerate(value):
        where = f"{param}[{i}]"
        if isinstance(item, str) and first is str:
            out.append(item)
        elif isinstance(item, list) and first is list:
            out.append(_token_ids(item, where, limits))
        else:
            raise InvalidRequest(
                f"'{where}' must be a {'string' if first is str else 'list of token ids'} like "
                f"'{param}[0]' (a prompt list holds strings, token ids or token-id lists, not a "
                "mix).", param=where, code="invalid_type")
    return out


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _nulls(cls, value: Any) -> Any:
        """``null`` means "not given" (SDKs and LangChain send it)."""
        return {k: v for k, v in value.items() if v is not None} if isinstance(value, dict) else value


class CompletionRequest(_Lenient):
    model: str | None = None
    prompt: Prompt = Field(description="A string, a list of strings, a list of token ids, or a "
                           "list of token-id lists; one choice per prompt × `n`.")
    suffix: str | None = Field(None, description="Fill-in-the-middle: the text after the "
                               "completion (models whose tokenizer has FIM tokens).")
    max_tokens: int = Field(16, ge=0, description="0 only with `echo` (the prompt's logprobs).")
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int = Field(1, ge=1, le=128)
    best_of: int | None = Field(None, ge=1, le=128)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(None, ge=0, le=20, description="Top alternatives per token "
                                 "(the server's `max_logprobs` at most).")
    echo: bool = False
    stop: str | list[str] | None = None  # counted and sized by the budgets (max_stop_*)
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    # vLLM's extras (as in chat)
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0, le=2)
    ignore_eos: bool = False
    min_tokens: int = Field(0, ge=0)
    stop_token_ids: list[int] | None = None
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    add_special_tokens: bool = Field(True, description="BOS before a text prompt.")
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = None
    vllm_xargs: dict[str, Any] | None = None

    @property
    def tools(self) -> None:
        """Text completions carry no tools (what the shared schema checks ask)."""
        return None


def parse_completion_request(body: Any, limits: PromptLimits, budgets: Budgets = DEFAULT,
                             ) -> tuple[CompletionRequest, list[str | list[int]]]:
    """The validated request and its prompts (each a string or a list of token ids), within the
    server's input budgets (stop strings, schemas: ``server.budgets``, as chat)."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    for field, hint in UNSUPPORTED.items():
        if body.get(field) not in (None, False):
            raise InvalidRequest(f"'{field}' is not supported: {hint}.", param=field,
                                 code="unsupported_parameter")
    if body.get("prompt") is None:
        raise InvalidRequest("Missing required parameter: 'prompt'.", param="prompt",
                             code="missing_required_parameter")
    prompts = prompt_list(body["prompt"], limits)
    given = {k: body[k] for k in LEGACY_GUIDED if body.get(k) is not None}
    if given:  # vLLM's removed guided_* fields, honoured as in chat
        if body.get("structured_outputs") is not None:
            field = next(iter(given))
            raise InvalidRequest(f"'{field}' cannot be combined with 'structured_outputs'.",
                                 param=field)
        body = {k: v for k, v in body.items() if k not in LEGACY_GUIDED}
        body["structured_outputs"] = {LEGACY_GUIDED[k]: v for k, v in given.items()}
    try:  # the prompt is checked already: pydantic does not walk it again
        req = CompletionRequest.model_validate({**body, "prompt": ""})
    except ValidationError as exc:
        raise validation_error(exc) from None
    req.prompt = body["prompt"]
    _check_rules(req, prompts)
    check_budgets(req, budgets)  # type: ignore[arg-type] # stop strings and schemas, as chat
    if len(prompts) * req.n > limits.max_prompts:
        raise InvalidRequest(
            f"{len(prompts)} prompt(s) × 'n' {req.n} = {len(prompts) * req.n} choices; this server "
            f"generates at most {limits.max_prompts} choices in one request.", param="n",
            code="invalid_value")
    return req, prompts


def _check_rules(req: CompletionRequest, prompts: list[str | list[int]]) -> None:
    if req.best_of is not None and req.best_of != req.n:
        raise InvalidRequest(
            f"'best_of' ({req.best_of}) must equal 'n' ({req.n}): this server returns every "
            "completion it generates.", param="best_of", code="unsupported_parameter")
    if req.stream_options is not None and not req.stream:
        raise InvalidRequest("'stream_options' is only allowed when 'stream' is true.",
                             param="stream_options")
    if req.max_tokens == 0 and not req.echo:
        raise InvalidRequest("'max_tokens' must be at least 1 (0 only with 'echo').",
                             param="max_tokens", code="invalid_value")
    if req.suffix is not None:
        if req.echo:
            raise InvalidRequest("'echo' is not supported with 'suffix'.", param="echo")
        if any(not isinstance(p, str) for p in prompts):
            raise InvalidRequest("'suffix' needs a text prompt (not token ids).", param="suffix")
    elif any(p == "" for p in prompts):
        where = "prompt" if isinstance(req.prompt, str) else f"prompt[{prompts.index('')}]"
        raise InvalidRequest(f"'{where}' must not be empty.", param=where, code="invalid_value")


class TokenizeRequest(_Lenient):
    """vLLM's ``/tokenize``: a text ``prompt``, or chat ``messages`` (+ the chat fields that
    shape the prompt: ``tools``, images, ``reasoning_effort``…, rendered exactly as chat)."""

    model: str | None = None
    prompt: str | None = None
    messages: list[dict[str, Any]] | None = None
    add_special_tokens: bool = Field(True, description="BOS before a text prompt (messages "
                                     "render with their own).")
    add_generation_prompt: bool = True
    return_token_strs: bool = False


class DetokenizeRequest(_Lenient):
    model: str | None = None
    tokens: list[int]


def parse_tokenize_request(body: Any) -> TokenizeRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    has_prompt, has_messages = body.get("prompt") is not None, body.get("messages") is not None
    if has_prompt == has_messages:
        raise InvalidRequest("Send either 'prompt' (text) or 'messages' (a chat), not both."
                             if has_prompt else "Missing required parameter: 'prompt' (or "
                             "'messages').", param="prompt",
                             code="invalid_value" if has_prompt else "missing_required_parameter")
    if has_prompt and not isinstance(body["prompt"], str):
        raise InvalidRequest("'prompt' must be a string.", param="prompt", code="invalid_type")
    try:
        return TokenizeRequest.model_validate(
            {k: v for k, v in body.items() if k in TokenizeRequest.model_fields})
    except ValidationError as exc:
        raise validation_error(exc) from None


def parse_detokenize_request(body: Any, max_tokens: int) -> DetokenizeRequest:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.", code="invalid_type")
    tokens = body.get("tokens")
    if tokens is None:
        raise InvalidRequest("Missing required parameter: 'tokens'.", param="tokens",
                             code="missing_required_parameter")
    if not isinstance(tokens, list):
        raise InvalidRequest("'tokens' must be a list of token ids.", param="tokens",
                             code="invalid_type")
    if len(tokens) > max_tokens:
        raise InvalidRequest(f"'tokens' holds {len(tokens)} ids; at most {max_tokens} (the "
                             "model's context length) are decoded at once.", param="tokens",
                             code="invalid_value")
    if tokens and not all(type(t) is int for t in tokens):
        i = next(i for i, t in enumerate(tokens) if not _is_id(t))
        raise InvalidRequest(f"'tokens[{i}]' must be a token id (an integer).",
                             param=f"tokens[{i}]", code="invalid_type")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequest("'model' must be a string.", param="model", code="invalid_type")
    return DetokenizeRequest.model_construct(model=model, tokens=tokens)
