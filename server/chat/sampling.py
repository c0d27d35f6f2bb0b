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


def _check_request_rules(req: ChatCompletionRequest, max_logprobs: int, max_n: int) -> None:
    if req.top_logprobs is not None and req.top_logprobs > 0 and not req.logprobs:
        raise InvalidRequest("'top_logprobs' requires 'logprobs' to be true.", param="top_logprobs")
    if req.logprobs and (req.top_logprobs or 0) > max_logprobs:
        raise InvalidRequest(f"'top_logprobs' must be at most {max_logprobs} on this server.",
                             param="top_logprobs", code="invalid_value")
    if req.n > max_n:
        raise InvalidRequest(f"'n' must be at most {max_n} on this server.", param="n",
                             code="invalid_value")
    if req.stream_options is not None and not req.stream:
        raise InvalidRequest("'stream_options' is only allowed when 'stream' is true.",
                             param="stream_options")
    stops = [req.stop] if isinstance(req.stop, str) else (req.stop or [])
    if any(s == "" for s in stops):
        raise InvalidRequest("'stop' must not contain empty strings.", param="stop")


def _max_tokens(req: ChatCompletionRequest, prompt_len: int, max_model_len: int,
                default: int | None) -> int:
    room = max_model_len - prompt_len
    param = "max_completion_tokens" if req.max_completion_tokens else "max_tokens"
    requested = req.max_new_tokens
    if requested is None:
        return max(1, min(room, default) if default else room)
    if req.fit_max_tokens and prompt_len + requested > max_model_len:
        return room  # the output stops where the context ends (the renderer leaves room >= 1)
    if requested > max_model_len:
        raise InvalidRequest(
            f"'{param}' is {requested}, but this model's maximum context length is "
            f"{max_model_len} tokens.", param=param, code="invalid_value")
    if prompt_len + requested > max_model_len:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {max_model_len} tokens. However, you "
            f"requested {prompt_len + requested} tokens ({prompt_len} in the messages, "
            f"{requested} in the completion). Please reduce the length of the messages or "
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
    req: ChatCompletionRequest,
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
    for token in req.stop_token_ids or []:
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
        logprobs=(req.top_logprobs or 0) if req.logprobs else None,
        stop_token_ids=list(req.stop_token_ids or []),
        logit_bias=_logit_bias(req.logit_bias, vocab_size),
        constraint=constraint,
        extra_args=req.vllm_xargs,
        **values,
    )
    stops = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
    return Plan(sampling=spec, stop=StopStrings(stops) if stops else None, choices=req.n,
                top_logprobs=(req.top_logprobs or 0) if req.logprobs else None)
