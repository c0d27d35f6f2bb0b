"""One engine request as a stream of steps, for every API that generates (chat, Responses,
text completions): the request timeout, the drain cut-off, a dead engine and engine-side
rejections are handled here once.

``EngineSteps.start`` adds the request and reads its first step before anything is sent, so what
the engine refuses is still an HTTP error; closing the steps early aborts the engine request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol, TypeVar

from server import metrics
from server.chat.sampling import Plan
from server.engine.base import CompletionDelta, EngineClient, EngineDead, InvalidConstraint
from server.errors import EngineFailure, InvalidRequest, RequestTimeout, Unavailable

T = TypeVar("T")


class EngineSteps:
    """Engine deltas of one request at a time, under the server's limits. ``stop()`` (drain
    timeout) ends every request still generating at its next step, for all APIs at once."""

    def __init__(self, engine: EngineClient, *, request_timeout: float | None = None,
                 on_engine_dead: Callable[[str], None] | None = None) -> None:
        self.engine = engine
        self.request_timeout = request_timeout
        self.on_engine_dead = on_engine_dead
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True

    async def run(self, prompt_ids: list[int], plan: Plan, request_id: str, *,
                  images: Sequence[Any] = (), constraint_param: str = "structured_outputs",
                  ) -> AsyncIterator[list[CompletionDelta]]:
        """Engine deltas; greedy n>1 runs once and is copied to every choice. A constraint the
        engine rejects is a 400 naming ``constraint_param``."""
        copies = plan.choices if plan.sampling.n == 1 and plan.choices > 1 else 1
        stream = self.engine.generate(prompt_ids, plan.sampling, request_id, images=images)
        deadline = time.monotonic() + self.request_timeout if self.request_timeout else None
        try:
            while True:
                try:
                    if deadline is None:
                        batch = await anext(stream)
                    else:
                        batch = await asyncio.wait_for(anext(stream), max(0.0, deadline - time.monotonic()))
                except StopAsyncIteration:
                    break
                except asyncio.TimeoutError:
                    metrics.TIMEOUTS.inc()
                    raise RequestTimeout(f"The request did not finish within {self.request_timeout:g} s "
                                         "and was aborted.") from None
                if self.stopping:
                    raise Unavailable("The server is shutting down; the request was cut short.",
                                      code="server_draining")
                if copies > 1:
                    batch = [dataclasses.replace(d, index=i) for d in batch for i in range(copies)]
                yield batch
        except InvalidConstraint as exc:
            raise InvalidRequest(f"{exc}.", param=constraint_param) from None
        except EngineDead as exc:
            if self.on_engine_dead is not None:
                self.on_engine_dead(str(exc) or "engine died")
            raise EngineFailure("The inference engine failed; the server is restarting.") from None
        finally:
            await stream.aclose()

    async def start(self, prompt_ids: list[int], plan: Plan, request_id: str, *,
                    images: Sequence[Any] = (), constraint_param: str = "structured_outputs",
                    ) -> AsyncIterator[list[CompletionDelta]]:
        """``run``, primed: the request is added and its first step read before any byte goes
        out, so constraints the engine rejects still become a 400."""
        return await primed(self.run(prompt_ids, plan, request_id, images=images,
                                     constraint_param=constraint_param))


async def primed(items: AsyncIterator[T]) -> AsyncIterator[T]:
    """``items`` with its first element already read (what that read raises is raised here,
    with ``items`` closed); iterating the result gives every element, the first one included."""
    try:
        first = await anext(items)
    except StopAsyncIteration:
        return items
    except BaseException:
        await items.aclose()  # type: ignore[attr-defined]
        raise
    return _prepend(first, items)


async def _prepend(first: T, rest: AsyncIterator[T]) -> AsyncIterator[T]:
    try:
        yield first
        async for item in rest:
            yield item
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


class Choice(Protocol):
    @property
    def done(self) -> bool: ...

    stopped_by_string: bool


def cut_short(choices: Sequence[Choice]) -> bool:
    """All choices are done, and a stop string (not the engine) ended at least one."""
    return all(c.done for c in choices) and any(c.stopped_by_string for c in choices)


def needs_abort(finished: bool, choices: Sequence[Choice]) -> bool:
    """Whether the engine may still be working on the request when we stop reading it."""
    if not finished:
        return True
    return any(c.stopped_by_string or not c.done for c in choices)
