"""The only module that imports vLLM: ``AsyncLLM`` behind the ``EngineClient`` interface.

Prompts go in as token ids (rendered by mistral-common in ``server.chat.render``); tokens come
back as ids only (``detokenize=False``): our parsers own detokenization, so vLLM's text is never
used and its detokenizer costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from server.engine.base import (
    CompletionDelta,
    Constraint,
    EngineDead,
    InvalidConstraint,
    SamplingSpec,
    TokenLogprob,
)

log = logging.getLogger(__name__)

WARM_UP_TIMEOUT = 120.0  # seconds; a cancelled warm-up request is aborted in the engine


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Everything vLLM needs to start, decided by ``server.model`` from Settings."""

    model_dir: str
    served_model_name: str
    max_model_len: int | None
    device: str
    tensor_parallel_size: int
    pipeline_parallel_size: int
    dtype: str
    gpu_memory_utilization: float
    max_num_seqs: int | None
    enforce_eager: bool
    max_logprobs: int
    compact_json: bool
    structured_backend: str
    logits_processors: tuple[str, ...]
    extra: tuple[tuple[str, Any], ...]
    # the [THINK] and [/THINK] control token ids, when the tokenizer has them: the engine can
    # then end a request's thinking at its ``thinking_token_budget``
    think_token_ids: tuple[int, int] | None = None


def _constraint_params(constraint: Constraint) -> Any:
    from vllm.sampling_params import StructuredOutputsParams

    kwargs: dict[str, Any] = {constraint.kind: constraint.value}
    if constraint.kind == "json_object":
        kwargs = {"json_object": True}
    return StructuredOutputsParams(**kwargs)


def to_sampling_params(spec: SamplingSpec) -> Any:
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    optional = {
        "temperature": spec.temperature,
        "top_p": spec.top_p,
        "top_k": spec.top_k,
        "min_p": spec.min_p,
        "repetition_penalty": spec.repetition_penalty,
        "presence_penalty": spec.presence_penalty,
        "frequency_penalty": spec.frequency_penalty,
        "seed": spec.seed,
        "logprobs": spec.logprobs,
        "prompt_logprobs": spec.prompt_logprobs,
        "logit_bias": spec.logit_bias,
        "extra_args": spec.extra_args,
        "thinking_token_budget": spec.thinking_token_budget,
    }
    kwargs = {k: v for k, v in optional.items() if v is not None}
    if spec.constraint is not None:
        kwargs["structured_outputs"] = _constraint_params(spec.constraint)
    return SamplingParams(
        n=spec.n,
        max_tokens=spec.max_tokens,
        min_tokens=spec.min_tokens,
        ignore_eos=spec.ignore_eos,
        stop_token_ids=spec.stop_token_ids or None,
        detokenize=False,
        skip_special_tokens=False,
        output_kind=RequestOutputKind.DELTA,
        **kwargs,
    )


def _logprobs(entries: Any, token_ids: list[int]) -> list[TokenLogprob]:
    out = []
    for token_id, entry in zip(token_ids, entries):
        ranked = sorted(
            ((tid, lp) for tid, lp in entry.items() if lp.rank is not None and lp.rank > 0),
            key=lambda item: item[1].rank,
        )
        chosen = entry.get(token_id)
        out.append(TokenLogprob(
            logprob=max(chosen.logprob, -9999.0) if chosen is not None else -9999.0,
            top=tuple((tid, max(lp.logprob, -9999.0)) for tid, lp in ranked),
        ))
    return out


def _prompt_logprobs(entries: Any, token_ids: list[int]) -> list[TokenLogprob | None]:
    """vLLM's prompt logprobs (None first: the first token has no context) in our shape."""
    return [None if entry is None else _logprobs([entry], [token_id])[0]
            for token_id, entry in zip(token_ids, entries)]


_NATIVE_PREFIX = re.compile(r"^\[[0-9:]+\] \S+:\d+: ")


def _explain(exc: BaseException) -> str:
    """vLLM's message plus its cause (e.g. the grammar parser's), minus native log prefixes."""
    message = str(exc).strip().rstrip(".")
    cause = exc.__cause__
    if cause is not None and str(cause).strip():
        detail = _NATIVE_PREFIX.sub("", str(cause).strip().splitlines()[0])
        message = f"{message}: {detail}"
    return message


def engine_args(config: EngineConfig) -> Any:
    """vLLM's ``AsyncEngineArgs`` for ``config`` (the same for the engine core and its clients)."""
    from vllm.config import StructuredOutputsConfig
    from vllm.engine.arg_utils import AsyncEngineArgs

    extra = dict(config.extra)
    if config.think_token_ids is not None and "reasoning_config" not in extra:
        extra["reasoning_config"] = _reasoning_config(*config.think_token_ids)
    return AsyncEngineArgs(
        model=config.model_dir,
        served_model_name=[config.served_model_name],
        tokenizer_mode="mistral",
        max_model_len=config.max_model_len,
        tensor_parallel_size=config.tensor_parallel_size,
        pipeline_parallel_size=config.pipeline_parallel_size,
        dtype=config.dtype,
        gpu_memory_utilization=config.gpu_memory_utilization,
        enforce_eager=config.enforce_eager,
        max_logprobs=config.max_logprobs,
        logits_processors=list(config.logits_processors) or None,
        structured_outputs_config=StructuredOutputsConfig(
            backend=config.structured_backend, disable_any_whitespace=config.compact_json
        ),
        **({"max_num_seqs": config.max_num_seqs} if config.max_num_seqs else {}),
        **extra,
    )


def _reasoning_config(think: int, end_think: int) -> Any:
    """vLLM's thinking-budget configuration for ``[THINK]``/``[/THINK]`` control tokens.

    vLLM derives the token ids by encoding the strings with the tokenizer, but a Mistral
    tokenizer encodes ``"[THINK]"`` as plain text, never as the control token the model writes;
    so the ids are given, and vLLM takes ids already present as initialised."""
    from vllm.config.reasoning import ReasoningConfig

    config = ReasoningConfig(reasoning_start_str="[THINK]", reasoning_end_str="[/THINK]")
    config._reasoning_start_token_ids = [think]
    config._reasoning_end_token_ids = [end_think]
    config._natural_reasoning_end_token_ids = [end_think]
    return config


class VllmEngine:
    """``EngineClient`` over vLLM's ``AsyncLLM`` (CPU build and GPU build alike)."""

    def __init__(self, engine: Any, max_model_len: int, max_num_seqs: int) -> None:
        self._engine = engine
        self.max_model_len = max_model_len
        self.max_num_seqs = max_num_seqs

    @classmethod
    def start(cls, config: EngineConfig, client: dict[str, Any] | None = None) -> "VllmEngine":
        """Start the engine core and its client in this process; or, with ``client`` (one API
        process of several: ``client_count``, ``client_index`` and the engine's addresses, from
        ``server.engine.vllm_launch``), only the client, attached to the engine core the
        supervisor launched, as each of ``vllm serve --api-server-count`` N processes does."""
        from vllm.v1.engine.async_llm import AsyncLLM

        args = engine_args(config)
        if client is None:
            engine = AsyncLLM.from_engine_args(args)  # stats on: vllm:* metrics in the registry
        else:
            from vllm.usage.usage_lib import UsageContext

            addresses = dict(client)
            count, index = addresses.pop("client_count"), addresses.pop("client_index")
            args._api_process_count, args._api_process_rank = count, index
            vllm_config = args.create_engine_config(UsageContext.ENGINE_CONTEXT)
            engine = AsyncLLM.from_vllm_config(
                vllm_config, usage_context=UsageContext.ENGINE_CONTEXT,
                client_addresses=addresses, client_count=count, client_index=index)
        return cls(engine, engine.model_config.max_model_len,
                   engine.vllm_config.scheduler_config.max_num_seqs)

    def engine_died(self) -> None:
        """The supervisor saw the engine core process exit (several API processes: this one has
        no handle on it). Fail what is in flight with ``EngineDead`` and close the client, as
        vLLM's own engine monitor does when the engine core is this process's child, without
        its output loop logging the death again as a failure of its own (the supervisor said
        why the server ends)."""
        from vllm.v1.engine.exceptions import EngineDeadError

        engine = self._engine
        handler = getattr(engine, "output_handler", None)
        if handler is not None:
            handler.cancel()
        processor = getattr(engine, "output_processor", None)
        if processor is not None:
            processor.propagate_error(EngineDeadError())
        core = getattr(engine, "engine_core", None)
        if core is not None:
            core.resources.engine_dead = True
            core.shutdown()

    async def generate(
        self, prompt_token_ids: list[int], sampling: SamplingSpec, request_id: str,
        *, images: Sequence[Any] = (),
    ) -> AsyncIterator[list[CompletionDelta]]:
        from vllm.exceptions import VLLMClientError
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            params = to_sampling_params(sampling)
        except (ValueError, VLLMClientError) as exc:
            raise InvalidConstraint(_explain(exc)) from None
        prompt: dict[str, Any] = {"prompt_token_ids": prompt_token_ids}
        if images:  # Pixtral's processor finds the grids in the prompt and keeps them as they are
            prompt["multi_modal_data"] = {"image": list(images)}
        stream = self._engine.generate(prompt, params, request_id=request_id)
        try:
            async for output in stream:
                deltas = []
                prompt_lps = (_prompt_logprobs(output.prompt_logprobs, prompt_token_ids)
                              if output.prompt_logprobs else None)
                for comp in output.outputs:
                    ids = list(comp.token_ids)
                    reason = comp.finish_reason
                    if reason not in (None, "stop", "length"):
                        reason = "abort"
                    deltas.append(CompletionDelta(
                        index=comp.index,
                        token_ids=ids,
                        logprobs=_logprobs(comp.logprobs, ids) if comp.logprobs else None,
                        finish_reason=reason,
                        prompt_logprobs=prompt_lps,
                    ))
                yield deltas
        except EngineDeadError as exc:
            raise EngineDead(str(exc)) from None
        except (ValueError, VLLMClientError) as exc:
            # Raised while the request is added: structured-output validation and the like.
            raise InvalidConstraint(_explain(exc)) from None

    async def warm_up(self) -> None:
        """One constrained token: the structured-output backend builds its tokenizer tables once
        per process (frontend and engine core; ~1.5 s for llguidance with Tekken's vocabulary),
        which would otherwise land on the first constrained request."""
        spec = SamplingSpec(max_tokens=1, constraint=Constraint("json_object", True))

        async def one_token() -> None:
            async for _ in self.generate([1], spec, "warm-up"):
                pass

        try:
            await asyncio.wait_for(one_token(), WARM_UP_TIMEOUT)
        except EngineDead:
            raise
        except Exception as exc:  # noqa: BLE001 - a slower first request is not worth failing over
            log.warning("structured-output warm-up failed (%s); the first constrained request "
                        "will pay the backend's set-up", exc or type(exc).__name__)

    async def abort(self, request_id: str) -> None:
        await self._engine.abort(request_id)

    async def check_health(self) -> None:
        from vllm.v1.engine.exceptions import EngineDeadError

        try:
            await self._engine.check_health()
        except EngineDeadError as exc:
            raise EngineDead(str(exc)) from None

    @property
    def dead(self) -> bool:
        return bool(getattr(self._engine, "errored", False))

    async def shutdown(self) -> None:
        self._engine.shutdown()
