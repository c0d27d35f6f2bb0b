"""Pure mapping: validated request + model defaults → ``SamplingSpec`` for the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.chat.stops import StopStrings
from server.engine.base import Constraint, SamplingSpec
from server.errors import ContextLengthExceeded, InvalidRequest
from server.protocol import ChatCompletionRequest

_SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty",
                  "presence_penalty", "frequency_penalty")


@dataclass(frozen=True, slots=True)
class Plan:
    """How a request is generated: engine sampling plus what the frontend applies itself."""

    sampling: SamplingSpec
    stop: StopStrings | None  # the stop strings the frontend looks for, if any
    choices: int  # choices in the response (engine n may be 1 when greedy choices are copies)
    top_logprobs: int | None  # None = no logprobs in the response


@dataclass(frozen=True, slots=True)
class SamplingRequest:
    """What sampling needs of a request, whichever API it came through (chat, Responses, text
    completions), with the names its errors should give for the fields that differ."""

    n: int = 1
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    ignore_eos: bool = False
    min_tokens: int = 0
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    logit_bias: dict[str, float] | None = None
    extra_args: dict[str, Any] | None = None
    thinking_token_budget: int | None = None
    top_logprobs: int | None = None  # None = no logprobs in the response
    prompt_logprobs: int | None = None  # None = none (text completions' echo)
    # a max_tokens beyond the context is cut to what fits instead of refused (Anthropic's API)
    fit_max_tokens: bool = False
    # how the request names its fields, for the 400s
    max_tokens_param: str = "max_tokens"
    logprobs_param: str = "top_logprobs"
    prompt_noun: str = "messages"


def chat_sampling(req: ChatCompletionRequest) -> SamplingRequest:
    """A chat request's sampling fields (and the checks only chat's field names need)."""
    if req.top_logprobs is not None and req.top_logprobs > 0 and not req.logprobs:
        raise InvalidRequest("'top_logprobs' requires 'logprobs' to be true.", param="top_logprobs")
    if req.stream_options is not None and not req.stream:
        raise InvalidRequest("'stream_options' is only allowed when 'stream' is true.",
                             param="stream_options")
    return SamplingRequest(
        n=req.n, max_tokens=req.max_new_tokens,
        **{k: getattr(req, k) for k in _SAMPLING_KEYS},
        seed=req.seed, ignore_eos=req.ignore_eos, min_tokens=req.min_tokens,
        stop=(req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ()),
        stop_token_ids=tuple(req.stop_token_ids or ()), logit_bias=req.logit_bias,
        extra_args=req.vllm_xargs, top_logprobs=(req.top_logprobs or 0) if req.logprobs else None,
        thinking_token_budget=req.thinking_token_budget,
        fit_max_tokens=req.fit_max_tokens,
        max_tokens_param="max_completion_tokens" if req.max_completion_tokens else "max_tokens")


def _check_request_rules(req: SamplingRequest, max_logprobs: int, max_n: int) -> None:
    for count in (req.top_logprobs, req.prompt_logprobs):
        if count is not None and count > max_logprobs:
            raise InvalidRequest(f"'{req.logprobs_param}' must be at most {max_logprobs} on this "
                                 "server.", param=req.logprobs_param, code="invalid_value")
    if req.n > max_n:
        raise InvalidRequest(f"'n' must be at most {max_n} on this server.", param="n",
                             code="invalid_value")
    if any(s == "" for s in req.stop):
        raise InvalidRequest("'stop' must not contain empty strings.", param="stop")


def _max_tokens(req: SamplingRequest, prompt_len: int, max_model_len: int,
                default: int | None) -> int:
    room = max_model_len - prompt_len
    param = req.max_tokens_param
    requested = req.max_tokens
    if requested is None:
        return max(1, min(room, default) if default else room)
    if req.fit_max_tokens and prompt_len + requested > max_model_len:
        return room  # the output stops where the context ends (the renderer leaves room >= 1)
    if requested > max_model_len:
        raise InvalidRequest(
            f"'{param}' is {requested}, but this model's maximum context length is "
            f"{max_model_len} tokens.", param=param, code="invalid_value")
    if prompt_len + requested > max_model_len:
        noun = req.prompt_noun
        raise ContextLengthExceeded(
            f"This model's maximum context length is {max_model_len} tokens. However, you "
            f"requested {prompt_len + requested} tokens ({prompt_len} in the {noun}, "
            f"{requested} in the completion). Please reduce the length of the {noun} or "
            "completion.", param=param)
    return requested


def _logit_bias(raw: dict[str, float] | None, vocab_size: int) -> dict[int, float] | None:
    if not raw:
        return None
    out: dict[int, float] = {}
    for key, value in raw.items():
        try:
            token = int(key)
        except ValueError:
            raise InvalidRequest(f"'logit_bias' keys must be token ids; got {key!r}.",
                                 param="logit_bias") from None
        if not 0 <= token < vocab_size:
            raise InvalidRequest(f"'logit_bias' token id {token} is outside the vocabulary.",
                                 param="logit_bias")
        out[token] = max(-100.0, min(100.0, float(value)))
    return out


def plan_sampling(
    req: SamplingRequest,
    *,
    prompt_len: int,
    max_model_len: int,
    vocab_size: int,
    defaults: dict[str, Any],
    max_logprobs: int,
    max_n: int,
    constraint: Constraint | None,
) -> Plan:
    _check_request_rules(req, max_logprobs, max_n)
    values = {k: getattr(req, k) for k in _SAMPLING_KEYS}
    for key in _SAMPLING_KEYS:
        if values[key] is None and key in defaults:
            values[key] = defaults[key]
    max_tokens = _max_tokens(req, prompt_len, max_model_len, defaults.get("max_tokens"))
    if req.min_tokens > max_tokens:
        raise InvalidRequest(f"'min_tokens' ({req.min_tokens}) must not exceed the tokens this "
                             f"request may generate ({max_tokens}).", param="min_tokens")
    for token in req.stop_token_ids:
        if not 0 <= token < vocab_size:
            raise InvalidRequest(f"'stop_token_ids' has {token}, outside the vocabulary.",
                                 param="stop_token_ids")
    greedy_copies = values["temperature"] == 0 and req.n > 1
    spec = SamplingSpec(
        n=1 if greedy_copies else req.n,
        max_tokens=max_tokens,
        seed=req.seed if req.seed is not None and req.seed != -1 else None,
        ignore_eos=req.ignore_eos,
        min_tokens=req.min_tokens,
        logprobs=req.top_logprobs,
        prompt_logprobs=req.prompt_logprobs,
        stop_token_ids=list(req.stop_token_ids),
        logit_bias=_logit_bias(req.logit_bias, vocab_size),
        constraint=constraint,
        extra_args=req.extra_args,
        thinking_token_budget=req.thinking_token_budget,
        **values,
    )
    return Plan(sampling=spec, stop=StopStrings(req.stop) if req.stop else None, choices=req.n,
                top_logprobs=req.top_logprobs)
