"""Chat completions: validate and render up front, then generate as JSON or as SSE.

All validation (schema, model, rendering, context length, constraints) finishes in ``prepare``,
before any byte is sent, so every request error is a real 4xx. A client that goes away mid-way
aborts the engine request (the generator's ``finally``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from PIL import Image

from parsers.base import OutputParser, ParseOptions
from server.budgets import DEFAULT, Budgets
from server.chat import schemas
from server.chat.choice import ChoiceState, Step
from server.chat.constraints import constraint_for
from server.chat.images import ImageLimits, load_images, tiny_png_data_url
from server.chat.mistral import MistralDeltas, mistral_response
from server.chat.output import MessageBuilder, stream_deltas
from server.chat.render import Renderer
from server.chat.sampling import Plan, chat_sampling, plan_sampling
from server.chat.steps import EngineSteps, cut_short, needs_abort
from server.chat.tools import plan_tools
from server.engine.base import CompletionDelta, EngineClient
from server.errors import (
    APIError,
    EngineFailure,
    InvalidRequest,
    ModelNotFound,
    error_body,
)
from server.model import ModelInfo
from server.protocol import ChatCompletionRequest, parse_request

log = logging.getLogger(__name__)

WARM_UP_TIMEOUT = 120.0  # seconds


@dataclass(frozen=True, slots=True)
class Prepared:
    request: ChatCompletionRequest
    request_id: str
    created: int
    prompt_ids: list[int]
    plan: Plan
    parse_options: ParseOptions
    calls_only: bool
    images: tuple[Image.Image, ...] = ()


class ChatService:
    def __init__(self, model: ModelInfo, engine: EngineClient, *, max_logprobs: int, max_n: int,
                 compact_json: bool, request_timeout: float | None = None,
                 on_engine_dead: Callable[[str], None] | None = None,
                 image_limits: ImageLimits | None = None, budgets: Budgets = DEFAULT) -> None:
        self.model = model
        self.engine = engine
        self.renderer = Renderer.for_model(model, engine.max_model_len)
        self.max_logprobs = max_logprobs
        self.max_n = max_n
        self.compact_json = compact_json
        self.runner = EngineSteps(engine, request_timeout=request_timeout,
                                  on_engine_dead=on_engine_dead)
        self.image_limits = image_limits or ImageLimits()
        self.budgets = budgets
        schemas.meta_validator()  # built now: a problem with it fails start-up, not requests

    async def warm_up(self) -> None:
        """Vision models: one tiny image request through the whole pipeline, so the first
        user's image does not pay the vision side's start-up (seconds on CPU)."""
        if not self.model.vision:
            return
        req = parse_request({"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": tiny_png_data_url()}]}], "max_tokens": 1})
        try:
            await asyncio.wait_for(self.complete(await self.prepare(req)), WARM_UP_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - a slower first image is not worth failing over
            log.warning("image warm-up failed (%s); the first image request will be slower",
                        exc or type(exc).__name__)

    def stop(self) -> None:
        """Drain timeout: requests still generating end at their next step with an error (every
        API's: they share ``runner``)."""
        self.runner.stop()

    # -- validation ------------------------------------------------------------------
    async def prepare(self, req: ChatCompletionRequest) -> Prepared:
        self._check_model(req)
        await schemas.precheck(req)  # new JSON schemas are checked off the event loop
        images = await load_images(req, self.model, self.image_limits)  # decoded off the loop
        if _heavy(req):  # rendering a long conversation takes milliseconds per thousand messages
            return await asyncio.to_thread(self._prepare_with, req, images)
        return self._prepare_with(req, images)

    async def prompt_ids(self, req: ChatCompletionRequest) -> list[int]:
        """The prompt ``prepare`` would send for ``req`` (``/tokenize`` counts it): the same
        checks, images, tools and rendering, but no sampling, and no context-length limit."""
        self._check_model(req)
        await schemas.precheck(req)
        images = await load_images(req, self.model, self.image_limits)

        def render() -> list[int]:
            plan_tools(req, self.model, compact_json=self.compact_json)
            return self.renderer.render(req, include_tools=bool(req.tools), images=images,
                                        check_length=False).token_ids
        if _heavy(req):
            return await asyncio.to_thread(render)
        return render()

    def _check_model(self, req: ChatCompletionRequest) -> None:
        if not self.model.accepts(req.model):
            raise ModelNotFound(f"The model '{req.model}' does not exist. This server serves "
                                f"'{self.model.id}'.", param="model")

    def _prepare_with(self, req: ChatCompletionRequest, images: Sequence[Image.Image]) -> Prepared:
        """The rest of ``prepare``, once the model is checked and the images (in prompt order)
        are loaded."""
        if req.thinking_token_budget is not None and self.model.think_token_ids is None:
            raise InvalidRequest("'thinking_token_budget' needs a model whose tokenizer has "
                                 "[THINK] and [/THINK] tokens; this one has none.",
                                 param="thinking_token_budget", code="invalid_value")
        tools = plan_tools(req, self.model, compact_json=self.compact_json)
        prompt = self.renderer.render(req, include_tools=bool(req.tools), images=images)
        constraint = tools.constraint or constraint_for(req, self.model, compact_json=self.compact_json)
        plan = plan_sampling(
            chat_sampling(req),
            prompt_len=len(prompt.token_ids),
            max_model_len=self.engine.max_model_len,
            vocab_size=self.model.vocab.size,
            defaults=self.model.defaults,
            max_logprobs=self.max_logprobs,
            max_n=self.max_n,
            constraint=constraint,
        )
        options = ParseOptions(tools=tools.parse_tools, reasoning=req.include_reasoning,
                               parallel_tool_calls=req.parallel_tool_calls)
        return Prepared(request=req, request_id=f"chatcmpl-{uuid.uuid4().hex}",
                        created=int(time.time()), prompt_ids=prompt.token_ids, plan=plan,
                        parse_options=options, calls_only=tools.calls_only,
                        images=tuple(images))

    def _parser(self, prep: Prepared) -> OutputParser:
        parser = self.model.parser_cls(self.model.vocab, prep.parse_options)
        if prep.calls_only:  # the forced output starts inside the call segment
            parser.feed([self.model.vocab.special_id("[TOOL_CALLS]")])
        return parser

    def _choices(self, prep: Prepared) -> list[ChoiceState]:
        return [
            ChoiceState(i, self._parser(prep), self.model.vocab, stop=prep.plan.stop,
                        top_logprobs=prep.plan.top_logprobs,
                        include_reasoning=prep.request.include_reasoning)
            for i in range(prep.plan.choices)
        ]

    async def _start(self, prep: Prepared) -> AsyncIterator[list[CompletionDelta]]:
        """Engine steps, primed (engine-side 4xxs are raised here, before any byte goes out)."""
        return await self.runner.start(prep.prompt_ids, prep.plan, prep.request_id,
                                       images=prep.images,
                                       constraint_param=_constraint_param(prep.request))

    def _usage(self, prep: Prepared, choices: list[ChoiceState]) -> dict[str, int]:
        completion = sum(c.completion_tokens for c in choices)
        prompt = len(prep.prompt_ids)
        return {"prompt_tokens": prompt, "completion_tokens": completion,
                "total_tokens": prompt + completion}

    # -- non-streaming -----------------------------------------------------------------
    async def complete(self, prep: Prepared) -> dict[str, Any]:
        choices = self._choices(prep)
        builders = [MessageBuilder(i, prep.plan.top_logprobs is not None) for i in range(len(choices))]
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
            await steps.aclose()
            if needs_abort(finished, choices):
                await self.engine.abort(prep.request_id)
        if any(c.failed for c in choices):
            raise EngineFailure("The request was aborted by the engine.")
        body = {
            "id": prep.request_id, "object": "chat.completion", "created": prep.created,
            "model": self.model.id, "choices": [b.choice() for b in builders],
            "usage": self._usage(prep, choices),
        }
        return mistral_response(body) if prep.request.mistral_output else body

    # -- one choice, as parser steps (the Responses API shapes these itself) -------------
    async def steps(self, prep: Prepared) -> AsyncIterator[tuple[CompletionDelta, Step]]:
        """The engine deltas of a one-choice request with their parsed steps. The request is
        added at the first ``anext`` (engine-side 4xxs are raised there, before any output is
        sent); closing this iterator early aborts the engine request."""
        choice = self._choices(prep)[0]
        steps = await self._start(prep)
        finished = False
        try:
            async for batch in steps:
                for delta in batch:
                    if not choice.done:
                        yield delta, choice.push(delta)
                if choice.failed:
                    raise EngineFailure("The request was aborted by the engine.")
                if cut_short([choice]):
                    break
            finished = True
        finally:
            await steps.aclose()
            if needs_abort(finished, [choice]):
                await self.engine.abort(prep.request_id)

    # -- streaming ---------------------------------------------------------------------
    async def open_stream(self, prep: Prepared) -> AsyncIterator[bytes]:
        """Start generating (errors here are real HTTP errors), then hand out the SSE frames."""
        return self._stream(prep, await self._start(prep))

    async def _stream(self, prep: Prepared, steps: AsyncIterator[list[CompletionDelta]]) -> AsyncIterator[bytes]:
        """SSE bytes; the frames of one engine step go out together (one write, no waiting)."""
        choices = self._choices(prep)
        shaper = (MistralDeltas(thinking_chunks=prep.request.mistral_output)
                  if prep.request.whole_tool_calls else None)
        include_usage = bool(prep.request.stream_options and prep.request.stream_options.include_usage)
        head = {"id": prep.request_id, "object": "chat.completion.chunk", "created": prep.created,
                "model": self.model.id}

        def frame(choice_list: list[dict[str, Any]], usage: Any = None) -> bytes:
            body = {**head, "choices": choice_list}
            if include_usage:
                body["usage"] = usage
            return b"data: " + orjson.dumps(body) + b"\n\n"

        yield b"".join(frame([{"index": c.index, "delta": {"role": "assistant", "content": ""},
                               "finish_reason": None}]) for c in choices)
        finished = False
        try:
            async for batch in steps:
                out: list[bytes] = []
                failed = False
                for delta in batch:
                    state = choices[delta.index]
                    if state.done:
                        continue
                    step = state.push(delta)
                    pending = step.logprobs
                    deltas = stream_deltas(step)
                    if shaper is not None:
                        deltas = shaper.convert(state.index, deltas, finished=step.finish_reason is not None)
                    for d in deltas:
                        item = {"index": state.index, "delta": d, "finish_reason": None}
                        if pending:
                            item["logprobs"] = {"content": pending, "refusal": None}
                            pending = []
                        out.append(frame([item]))
                    if state.failed:
                        failed = True
                        break
                    if step.finish_reason is not None:
                        item = {"index": state.index, "delta": {}, "finish_reason": step.finish_reason}
                        if pending:
                            item["logprobs"] = {"content": pending, "refusal": None}
                        out.append(frame([item]))
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
            await steps.aclose()
            if needs_abort(finished, choices):
                await self.engine.abort(prep.request_id)
        yield b"data: [DONE]\n\n"


HEAVY_MESSAGES, HEAVY_CHARS, HEAVY_TOOLS = 64, 32_000, 16


def _heavy(req: ChatCompletionRequest) -> bool:
    """Whether preparing ``req`` (rendering and tokenising it) is worth a worker thread, so
    that a long conversation does not hold the event loop."""
    if len(req.messages) > HEAVY_MESSAGES or len(req.tools or ()) > HEAVY_TOOLS:
        return True
    stops = [req.stop] if isinstance(req.stop, str) else req.stop or []
    chars = sum(len(s) for s in stops) * 8  # the stop-string automaton: a few µs per character
    for msg in req.messages:
        content = msg.content
        if isinstance(content, str):
            chars += len(content)
        elif content:
            chars += sum(len(getattr(part, "text", "")) for part in content)
    return chars > HEAVY_CHARS


def _constraint_param(req: ChatCompletionRequest) -> str:
    if req.structured_outputs is not None:
        return "structured_outputs"
    if req.response_format is not None:
        return "response_format"
    return "tools"
