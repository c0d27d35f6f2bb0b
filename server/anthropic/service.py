"""``/v1/messages``: the request as a chat request, the chat pipeline, the answer as a Message.

    MessagesRequest ─convert.to_chat─▶ ChatService.prepare ─▶ ChatService.steps
                    ─▶ MessageBuilder (events) ─▶ JSON (the message) or SSE (the events)

Everything that can be refused is refused before the first byte. A stream waits a moment for
the engine's first step, so what the engine rejects at once is still an HTTP error; a longer
wait (a long prompt's prefill, a full batch) answers 200 with ``message_start`` and sends
``ping`` events until the output starts. Errors after that are an ``error`` event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import orjson

from server.anthropic.blocks import Conversion
from server.anthropic.convert import Converted, to_chat
from server.anthropic.params import rename
from server.anthropic.output import MessageBuilder
from server.anthropic.protocol import MessagesRequest
from server.chat.choice import Step
from server.chat.service import ChatService, Prepared
from server.engine.base import CompletionDelta
from server.errors import INTERNAL, APIError, anthropic_error_body

log = logging.getLogger(__name__)

FIRST_STEP_WAIT = 1.0  # seconds a stream waits for the first step before it answers 200
PING_INTERVAL = 5.0  # seconds between ping events while the output has not started
PING = b'event: ping\ndata: {"type":"ping"}\n\n'


def frames(events: list[dict[str, Any]]) -> bytes:
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n"
                    for e in events)


def error_frame(err: APIError) -> bytes:
    return b"event: error\ndata: " + orjson.dumps(anthropic_error_body(err)) + b"\n\n"


class Run:
    """One prepared message: the builder, and what the last events need to know."""

    def __init__(self, req: MessagesRequest, converted: Converted, prep: Prepared,
                 builder: MessageBuilder) -> None:
        self.req, self.prep, self.builder = req, prep, builder
        self.conv: Conversion = converted.conversion
        self.output_tokens = 0
        self.finish_reason: str | None = None
        self.stop_sequence: str | None = None

    def push(self, delta: CompletionDelta, step: Step) -> list[dict[str, Any]]:
        self.output_tokens += len(delta.token_ids)
        if step.finish_reason is not None:
            self.finish_reason, self.stop_sequence = step.finish_reason, step.stop_sequence
        return self.builder.push(step)

    def finish(self) -> list[dict[str, Any]]:
        context_full = self.prep.plan.sampling.max_tokens < (self.req.max_tokens or 0)
        return self.builder.finish(self.finish_reason, self.stop_sequence, self.output_tokens,
                                   context_full=context_full)


class MessagesService:
    def __init__(self, chat: ChatService, *, accept_claude_models: bool = False) -> None:
        self.chat = chat
        self.accept_claude_models = accept_claude_models

    async def _prepare(self, req: MessagesRequest) -> tuple[Converted, Prepared]:
        converted = to_chat(req, self.chat.model, accept_claude_models=self.accept_claude_models,
                            budgets=self.chat.budgets)
        try:
            return converted, await self.chat.prepare(converted.chat)
        except APIError as err:
            raise rename(err, converted.conversion) from None

    async def count_tokens(self, req: MessagesRequest) -> dict[str, int]:
        """The prompt's tokens: what ``usage.input_tokens`` of the same request says."""
        _, prep = await self._prepare(req)
        return {"input_tokens": len(prep.prompt_ids)}

    async def start(self, req: MessagesRequest) -> Run:
        converted, prep = await self._prepare(req)
        builder = MessageBuilder(self.chat.model.id, len(prep.prompt_ids),
                                 show_thinking=converted.show_thinking)
        return Run(req, converted, prep, builder)

    async def complete(self, run: Run) -> dict[str, Any]:
        run.builder.start()
        steps = self.chat.steps(run.prep)
        try:
            async for delta, step in steps:
                run.push(delta, step)
        except APIError as err:
            raise rename(err, run.conv) from None
        finally:
            await steps.aclose()
        run.finish()
        return run.builder.message

    async def open_stream(self, run: Run) -> AsyncIterator[bytes]:
        """Start generating; what fails within ``FIRST_STEP_WAIT`` is raised here (an HTTP
        error), then the SSE frames."""
        steps = self.chat.steps(run.prep)
        first = asyncio.ensure_future(anext(steps))
        try:
            await asyncio.wait({first}, timeout=FIRST_STEP_WAIT)
        except BaseException:
            await _cancel(first)
            await steps.aclose()
            raise
        if first.done() and not first.cancelled():
            exc = first.exception()
            if exc is not None and not isinstance(exc, StopAsyncIteration):
                await steps.aclose()
                raise rename(exc, run.conv) if isinstance(exc, APIError) else exc
        return self._stream(run, steps, first)

    async def _stream(self, run: Run, steps: AsyncIterator[tuple[CompletionDelta, Step]],
                      first: asyncio.Future[tuple[CompletionDelta, Step]]) -> AsyncIterator[bytes]:
        """SSE: ``event: <type>`` + ``data: <event>``; the events of one engine step go out
        together."""
        try:
            yield frames(run.builder.start()) + PING
            while not first.done():
                await asyncio.wait({first}, timeout=PING_INTERVAL)
                if not first.done():
                    yield PING
            try:
                delta, step = first.result()
            except StopAsyncIteration:
                pass
            else:
                events = run.push(delta, step)
                if events:
                    yield frames(events)
                async for delta, step in steps:
                    events = run.push(delta, step)
                    if events:
                        yield frames(events)
            last = run.finish()
        except APIError as err:
            log.warning("message stream %s failed: %s", run.builder.message["id"], err.message)
            yield error_frame(rename(err, run.conv))
            return
        except Exception:  # noqa: BLE001 - the stream still ends with an error event
            log.exception("message stream %s failed", run.builder.message["id"])
            yield error_frame(INTERNAL)
            return
        finally:
            await _cancel(first)
            await steps.aclose()  # type: ignore[attr-defined]
        yield frames(last)


async def _cancel(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` and wait until it has stopped (so its generator can be closed)."""
    if not task.done():
        task.cancel()
        await asyncio.wait({task})
