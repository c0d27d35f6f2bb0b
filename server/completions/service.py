"""Text completions over the chat pipeline: the prompt is raw text (or token ids), the rest is
chat's machinery.

    prompt(s) ──tokenizer (BOS; FIM with ``suffix``)──▶ ids ┐
    response_format / structured_outputs ──constraints.py──┤ (the same 400s as chat)
    sampling fields ──SamplingRequest──▶ sampling.plan_sampling ┘
    EngineSteps (chat's: timeout, drain, dead engine) per prompt, merged
    ChoiceState(TextParser) per choice ──▶ TextChoice pieces ──▶ JSON or SSE chunks

Every check happens in ``prepare``, before a byte is sent. Each prompt is one engine request
(its ``n`` choices share it); choice ``index`` is ``prompt × n + j``, as OpenAI numbers them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from mistral_common.protocol.fim.request import FIMRequest

from parsers.text import TextParser
from parsers.vocab import Detokenizer
from server.chat import schemas
from server.chat.choice import ChoiceState
from server.chat.constraints import constraint_for
from server.chat.sampling import Plan, SamplingRequest, plan_sampling
from server.chat.service import ChatService
from server.chat.steps import cut_short, needs_abort
from server.completions.output import ChoiceBuilder, PromptLogprobs, TextChoice
from server.completions.protocol import CompletionRequest, PromptLimits
from server.engine.base import CompletionDelta
from server.errors import (
    APIError,
    ContextLengthExceeded,
    EngineFailure,
    InvalidRequest,
    ModelNotFound,
    error_body,
)

log = logging.getLogger(__name__)

OFF_LOOP_CHARS = 32_768  # longer texts are tokenized in a worker thread
IMAGE_TOKENS = ("[IMG]", "[IMG_BREAK]", "[IMG_END]")


@dataclass(frozen=True, slots=True)
class Prompt:
    ids: list[int]
    text: str  # what ``echo`` puts first: the prompt as sent, or its ids decoded
    param: str  # where it is in the request (``prompt``, ``prompt[2]``)


@dataclass(frozen=True, slots=True)
class PreparedCompletion:
    request: CompletionRequest
    request_id: str
    created: int
    prompts: tuple[Prompt, ...]
    plans: tuple[Plan, ...]

    def engine_id(self, p: int) -> str:
        return self.request_id if len(self.prompts) == 1 else f"{self.request_id}-{p}"


class CompletionService:
    def __init__(self, chat: ChatService, *, max_choices: int) -> None:
        self.chat = chat
        self.model = chat.model
        self.vocab = chat.model.vocab
        self.engine = chat.engine
        self.runner = chat.runner  # one drain switch for every API
        self.max_model_len = chat.engine.max_model_len
        self.limits = PromptLimits(max_prompts=max_choices, max_prompt_tokens=self.max_model_len)
        # A text longer than this cannot fit, whatever its tokens: every token covers at most
        # max_token_bytes bytes (x2: SentencePiece normalisation may shorten a text).
        widest = max(len(self.vocab.token_bytes(i)) for i in range(self.vocab.size))
        self.max_chars = self.max_model_len * widest * (2 if self.vocab.is_spm else 1)
        self.image_ids = frozenset(i for name in IMAGE_TOKENS
                                   if (i := self.vocab.special_id(name)) is not None)

    # -- prompts -------------------------------------------------------------------------
    async def encode(self, text: str, *, bos: bool, param: str, suffix: str | None = None) -> list[int]:
        """Token ids of a text prompt (FIM with ``suffix``); a text that cannot fit the context
        is refused before any tokenisation."""
        if len(text) + len(suffix or "") > self.max_chars:
            raise ContextLengthExceeded(
                f"'{param}' is {len(text)} characters, more than this model's maximum context "
                f"length of {self.max_model_len} tokens can hold.", param=param)
        inner = self.model.tokenizer.instruct_tokenizer.tokenizer
        if suffix is not None:
            def work() -> list[int]:
                return self.model.tokenizer.encode_fim(FIMRequest(prompt=text, suffix=suffix)).tokens
        else:
            def work() -> list[int]:
                return inner.encode(text, bos=bos, eos=False)
        if len(text) + len(suffix or "") > OFF_LOOP_CHARS:
            return await asyncio.to_thread(work)
        return work()

    def decode(self, ids: list[int]) -> str:
        """Ordinary tokens as text (control tokens skipped), as ``tokenizer.decode``."""
        detok = Detokenizer(self.vocab)
        return "".join(detok.push(t) for t in ids if not self.vocab.is_special(t)) + detok.flush()

    def check_ids(self, ids: list[int], param: str) -> None:
        if min(ids) < 0 or max(ids) >= self.vocab.size:
            j = next(j for j, t in enumerate(ids) if not 0 <= t < self.vocab.size)
            raise InvalidRequest(f"'{param}[{j}]' is {ids[j]}, outside the vocabulary (0 to "
                                 f"{self.vocab.size - 1}).", param=f"{param}[{j}]",
                                 code="invalid_value")

    async def _prompt(self, req: CompletionRequest, raw: str | list[int], param: str) -> Prompt:
        if isinstance(raw, str):
            ids = await self.encode(raw, bos=req.add_special_tokens, param=param, suffix=req.suffix)
            text = raw
        else:
            self.check_ids(raw, param)
            if not self.image_ids.isdisjoint(raw):
                raise InvalidRequest(f"'{param}' holds image tokens; images go through "
                                     "/v1/chat/completions.", param=param, code="invalid_value")
            ids, text = raw, self.decode(raw) if req.echo else ""
        if not ids:  # a text with no tokens and no BOS
            raise InvalidRequest(f"'{param}' has no tokens.", param=param, code="invalid_value")
        if len(ids) >= self.max_model_len:
            raise ContextLengthExceeded(
                f"This model's maximum context length is {self.max_model_len} tokens. However, "
                f"your prompt has {len(ids)} tokens. Please reduce the length of the prompt.",
                param=param)
        return Prompt(ids, text, param)

    # -- validation ------------------------------------------------------------------------
    async def prepare(self, req: CompletionRequest, prompts: list[str | list[int]]) -> PreparedCompletion:
        if not self.model.accepts(req.model):
            raise ModelNotFound(f"The model '{req.model}' does not exist. This server serves "
                                f"'{self.model.id}'.", param="model")
        if req.suffix is not None and not self.model.fim:
            raise InvalidRequest(f"'suffix' (fill-in-the-middle) is not supported by "
                                 f"'{self.model.id}': its tokenizer has no FIM encoding.",
                                 param="suffix", code="unsupported_parameter")
        await schemas.precheck(req)  # type: ignore[arg-type] # its response_format / structured_outputs
        constraint = constraint_for(req, self.model,  # type: ignore[arg-type]
                                    compact_json=self.chat.compact_json)
        single = isinstance(req.prompt, str) or not isinstance(req.prompt[0], (str, list))
        encoded = [await self._prompt(req, raw, "prompt" if single else f"prompt[{i}]")
                   for i, raw in enumerate(prompts)]
        sampling = _sampling(req)
        plans = tuple(plan_sampling(
            sampling, prompt_len=len(p.ids), max_model_len=self.max_model_len,
            vocab_size=self.vocab.size, defaults=self.model.defaults,
            max_logprobs=self.chat.max_logprobs, max_n=self.chat.max_n, constraint=constraint,
        ) for p in encoded)
        return PreparedCompletion(req, f"cmpl-{uuid.uuid4().hex}", int(time.time()),
                                  tuple(encoded), plans)

    # -- generation ------------------------------------------------------------------------
    def _choices(self, prep: PreparedCompletion) -> list[TextChoice]:
        req = prep.request
        hidden = frozenset() if req.include_stop_str_in_output else frozenset(req.stop_token_ids or ())
        out = []
        for p, (prompt, plan) in enumerate(zip(prep.prompts, prep.plans)):
            shared = PromptLogprobs()  # the same for every choice of this prompt
            for j in range(plan.choices):
                index = p * req.n + j
                parser = TextParser(self.vocab, skip_special_tokens=req.skip_special_tokens,
                                    hidden=hidden)
                state = ChoiceState(index, parser, self.vocab, stop=plan.stop,
                                    top_logprobs=plan.top_logprobs,
                                    include_stop=req.include_stop_str_in_output)
                out.append(TextChoice(index, state, self.vocab, prompt_ids=prompt.ids,
                                      echo=prompt.text if req.echo else None,
                                      logprobs=req.logprobs, echo_only=req.max_tokens == 0,
                                      show_special=not req.skip_special_tokens, hidden=hidden,
                                      prompt_logprobs=shared))
        return out

    async def _start(self, prep: PreparedCompletion) -> AsyncIterator[list[CompletionDelta]]:
        """Every prompt's engine request added and primed at once (what the engine refuses is
        still an HTTP error), then their steps as one stream with choice indexes offset."""
        param = "structured_outputs" if prep.request.structured_outputs is not None else "response_format"
        if len(prep.prompts) == 1:  # the usual case: no task, no merge
            return await self.runner.start(prep.prompts[0].ids, prep.plans[0], prep.engine_id(0),
                                           constraint_param=param)
        starts = await asyncio.gather(*(
            self.runner.start(prompt.ids, plan, prep.engine_id(p), constraint_param=param)
            for p, (prompt, plan) in enumerate(zip(prep.prompts, prep.plans))), return_exceptions=True)
        failed = [s for s in starts if isinstance(s, BaseException)]
        if failed:
            for s in starts:
                if not isinstance(s, BaseException):
                    await s.aclose()  # type: ignore[attr-defined]
            await self._abort(prep)
            raise failed[0]
        return _merged(starts, [p * prep.request.n for p in range(len(starts))])  # type: ignore[arg-type]

    async def _abort(self, prep: PreparedCompletion) -> None:
        for p in range(len(prep.prompts)):
            await self.engine.abort(prep.engine_id(p))

    def _usage(self, prep: PreparedCompletion, choices: list[TextChoice]) -> dict[str, int]:
        prompt = sum(len(p.ids) for p in prep.prompts)
        completion = sum(c.completion_tokens for c in choices)
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}

    def _head(self, prep: PreparedCompletion) -> dict[str, Any]:
        return {"id": prep.request_id, "object": "text_completion", "created": prep.created,
                "model": self.model.id}

    async def complete(self, prep: PreparedCompletion) -> dict[str, Any]:
        choices = self._choices(prep)
        builders = [ChoiceBuilder(c.index, prep.request.logprobs is not None) for c in choices]
        finished = False
        steps = await self._start(prep)
        try:
            async for batch in steps:
                for delta in batch:
                    builders[delta.index].add(choices[delta.index].push(delta))
                if cut_short(choices):
                    break
            finished = True
        finally:
            await steps.aclose()  # type: ignore[attr-defined]
            if needs_abort(finished, choices):
                await self._abort(prep)
        if any(c.failed for c in choices):
            raise EngineFailure("The request was aborted by the engine.")
        return {**self._head(prep), "choices": [b.choice() for b in builders],
                "usage": self._usage(prep, choices)}

    async def open_stream(self, prep: PreparedCompletion) -> AsyncIterator[bytes]:
        """Start generating (errors here are real HTTP errors), then hand out the SSE frames."""
        return self._stream(prep, await self._start(prep))

    async def _stream(self, prep: PreparedCompletion,
                      steps: AsyncIterator[list[CompletionDelta]]) -> AsyncIterator[bytes]:
        """``text_completion`` chunks, the frames of one engine step in one write; usage (with
        ``stream_options.include_usage``) in a last chunk with no choices."""
        choices = self._choices(prep)
        req = prep.request
        include_usage = bool(req.stream_options and req.stream_options.include_usage)
        head = self._head(prep)

        def frame(choice_list: list[dict[str, Any]], usage: Any = None) -> bytes:
            body = {**head, "choices": choice_list}
            if usage is not None:
                body["usage"] = usage
            return b"data: " + orjson.dumps(body) + b"\n\n"

        finished = False
        try:
            async for batch in steps:
                out: list[bytes] = []
                failed = False
                for delta in batch:
                    choice = choices[delta.index]
                    if choice.done:
                        continue
                    piece = choice.push(delta)
                    if choice.failed:
                        failed = True
                        break
                    if piece.text or piece.finish_reason or (piece.logprobs and piece.logprobs["tokens"]):
                        out.append(frame([{"index": choice.index, "text": piece.text,
                                           "logprobs": piece.logprobs,
                                           "finish_reason": piece.finish_reason}]))
                if out:
                    yield b"".join(out)
                if failed:
                    raise EngineFailure("The request was aborted by the engine.")
                if cut_short(choices):
                    break
            finished = True
            if include_usage:
                yield frame([], self._usage(prep, choices))
        except APIError as err:
            log.warning("stream %s failed: %s", prep.request_id, err.message)
            yield b"data: " + orjson.dumps(error_body(err)) + b"\n\n"
        finally:
            await steps.aclose()  # type: ignore[attr-defined]
            if needs_abort(finished, choices):
                await self._abort(prep)
        yield b"data: [DONE]\n\n"


def _sampling(req: CompletionRequest) -> SamplingRequest:
    echo_logprobs = req.logprobs if req.echo and req.logprobs is not None else None
    return SamplingRequest(
        n=req.n, max_tokens=req.max_tokens or 1,  # 0 (echo only): one token, not shown
        temperature=req.temperature, top_p=req.top_p, top_k=req.top_k, min_p=req.min_p,
        repetition_penalty=req.repetition_penalty, presence_penalty=req.presence_penalty,
        frequency_penalty=req.frequency_penalty, seed=req.seed, ignore_eos=req.ignore_eos,
        min_tokens=req.min_tokens, stop=(req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ()),
        stop_token_ids=tuple(req.stop_token_ids or ()), logit_bias=req.logit_bias,
        extra_args=req.vllm_xargs, top_logprobs=req.logprobs, prompt_logprobs=echo_logprobs,
        logprobs_param="logprobs", prompt_noun="prompt")


async def _merged(streams: list[AsyncIterator[list[CompletionDelta]]],
                  offsets: list[int]) -> AsyncIterator[list[CompletionDelta]]:
    """The steps of several engine requests as one stream, choice indexes moved by ``offsets``.
    Closing it closes (and so aborts) every request."""
    pending = {asyncio.ensure_future(anext(s)): i for i, s in enumerate(streams)}
    try:
        while pending:
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            out: list[CompletionDelta] = []
            for task in done:
                i = pending.pop(task)
                try:
                    batch = task.result()
                except StopAsyncIteration:
                    continue
                out.extend(dataclasses.replace(d, index=d.index + offsets[i]) for d in batch)
                pending[asyncio.ensure_future(anext(streams[i]))] = i
            if out:
                yield out
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for s in streams:
            await s.aclose()  # type: ignore[attr-defined]
