"""What the rest of the server knows about an engine. No vLLM types cross this line."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

ConstraintKind = Literal["json", "json_object", "regex", "choice", "grammar", "structural_tag"]


@dataclass(frozen=True, slots=True)
class Constraint:
    """Constrained decoding: exactly one kind, its value, and whitespace policy for JSON."""

    kind: ConstraintKind
    value: Any
    compact_json: bool = True


@dataclass(slots=True)
class SamplingSpec:
    n: int = 1
    max_tokens: int = 16
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
    logprobs: int | None = None  # number of top alternatives; None = no logprobs
    prompt_logprobs: int | None = None  # the same for the prompt's tokens (None = none)
    stop_token_ids: list[int] = field(default_factory=list)
    logit_bias: dict[int, float] | None = None
    constraint: Constraint | None = None
    extra_args: dict[str, Any] | None = None
    # most tokens between [THINK] and [/THINK]; then the engine writes [/THINK] itself
    thinking_token_budget: int | None = None


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    logprob: float
    top: tuple[tuple[int, float], ...]  # (token id, logprob), best first


@dataclass(slots=True)
class CompletionDelta:
    """New tokens of one choice since its previous delta."""

    index: int
    token_ids: list[int]
    logprobs: list[TokenLogprob] | None = None
    finish_reason: Literal["stop", "length", "abort"] | None = None
    # With ``SamplingSpec.prompt_logprobs``: one entry per prompt token (None for the first,
    # which has no context), on the request's first delta of every choice only.
    prompt_logprobs: list[TokenLogprob | None] | None = None


class EngineClient(Protocol):
    """generate / abort / health: all the server asks of an engine."""

    max_model_len: int
    max_num_seqs: int  # requests the engine batches at once; more wait in its queue

    def generate(
        self, prompt_token_ids: list[int], sampling: SamplingSpec, request_id: str,
        *, images: Sequence[Any] = (),
    ) -> AsyncIterator[list[CompletionDelta]]:
        """``images``: PIL images whose ``[IMG]`` grids the prompt already holds, in order."""
        ...

    async def abort(self, request_id: str) -> None: ...

    async def check_health(self) -> None:
        """Raise if the engine cannot serve."""

    async def warm_up(self) -> None:
        """Pay one-time costs (e.g. grammar-backend start-up) before the server reports ready."""

    async def shutdown(self) -> None: ...

    def engine_died(self) -> None:
        """The engine core is gone and this client cannot tell by itself (several API processes
        over one engine core; the supervisor says so): requests in flight fail with EngineDead."""


class EngineDead(Exception):
    """The engine stopped working; the process should exit so it is restarted."""


class InvalidConstraint(ValueError):
    """The engine rejected a constraint (bad schema, regex or grammar)."""
