"""``/v1/responses``: the conversation from the store, the chat pipeline, the answer back to it.

    previous_response_id ──store.chain──▶ earlier items ┐
    input items ──canonical──────────────────────────────┴─▶ convert.to_chat ─▶ ChatService.prepare
    ChatService.steps ─▶ ResponseBuilder (events) ─▶ JSON or SSE ─▶ store.put (store: true)

Everything that can be refused is refused before the first byte: the stored chain is read, the
store pinged (when the response is to be kept), what will be stored and echoed serialised and
checked (``budget.py``) and the chat request fully prepared first. Nothing after generation fails
on input; a store that fails then still gets the answer out, marked ``store: false``.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import orjson

from parsers.events import ReasoningDelta
from server.chat.choice import Step
from server.chat.service import ChatService, Prepared
from server.chat.steps import primed
from server.engine.base import CompletionDelta
from server.errors import APIError, InvalidRequest, NotFound, Unavailable
from server.responses import budget
from server.responses.convert import Conversation, rename_param, to_chat
from server.responses.items import canonical_input
from server.responses.output import ResponseBuilder
from server.responses.protocol import ResponsesRequest
from server.responses.store import (
    ChainBroken, ChainTooLong, ResponseStore, StoredResponse, StoreUnavailable)

log = logging.getLogger(__name__)
T = TypeVar("T")


def store_down(exc: StoreUnavailable) -> Unavailable:
    return Unavailable(f"The response store is unavailable ({exc}); retry shortly, or send "
                       "'store': false without 'previous_response_id'.", code="store_unavailable",
                       headers={"Retry-After": "5"})


async def _from_store(call: Awaitable[T]) -> T:
    """A store call; the store being down is the 503 every route gives for it."""
    try:
        return await call
    except StoreUnavailable as exc:
        raise store_down(exc) from None


def not_found(response_id: str, param: str | None = None) -> NotFound:
    return NotFound(f"No response with id {response_id!r} was found (it may have expired, been "
                    "deleted, or belong to another API key).", param=param,
                    code="previous_response_not_found" if param else "response_not_found")


def broken_chain(previous: str, missing: str) -> NotFound:
    """The 404 for a chain with a missing link: it names that link, since `previous` itself may
    still be readable."""
    if missing == previous:
        return not_found(previous, "previous_response_id")
    return NotFound(f"Response {missing!r}, an earlier turn of the conversation that "
                    f"'previous_response_id' ({previous!r}) continues, was not found (it may have "
                    f"expired or been deleted), so {previous!r} cannot be continued; send the "
                    "conversation in 'input' instead.", param="previous_response_id",
                    code="previous_response_not_found")


def chain_too_long(previous: str, exc: ChainTooLong) -> InvalidRequest:
    what = "responses" if exc.setting.endswith("depth") else "bytes"
    return InvalidRequest(f"The conversation that 'previous_response_id' ({previous!r}) continues "
                          f"is longer than this server loads ({exc.limit} {what}, "
                          f"{exc.setting}); start a new conversation, or send it in 'input'.",
                          param="previous_response_id",
                          code="previous_response_chain_too_long" if what == "responses"
                          else "previous_response_chain_too_large")


class Run:
    """One prepared response: what the builder needs, and the steps to feed it."""

    def __init__(self, req: ResponsesRequest, owner: str, prep: Prepared, items: list[dict[str, Any]],
                 encoded_items: bytes | None, conv: Conversation, builder: ResponseBuilder,
                 steps: AsyncIterator[tuple[CompletionDelta, Step]]) -> None:
        self.req, self.owner, self.prep, self.items, self.conv = req, owner, prep, items, conv
        self.encoded_items = encoded_items  # the items' JSON when the response is to be kept
        self.keep = encoded_items is not None  # whether the finished response goes to the store
        self.builder, self.steps = builder, steps
        self.output_tokens = 0
        self.reasoning_tokens = 0
        self.finish_reason: str | None = None

    def push(self, delta: CompletionDelta, step: Step) -> list[dict[str, Any]]:
        self.output_tokens += len(delta.token_ids)
        if step.events and all(isinstance(e, ReasoningDelta) for e in step.events):
            self.reasoning_tokens += len(delta.token_ids)
        if step.finish_reason is not None:
            self.finish_reason = step.finish_reason
        return self.builder.push(step)

    def finish(self) -> list[dict[str, Any]]:
        prompt = len(self.prep.prompt_ids)
        usage = {"input_tokens": prompt,
                 "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                 "output_tokens": self.output_tokens,
                 "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
                 "total_tokens": prompt + self.output_tokens}
        return self.builder.finish(usage, self.finish_reason)


class StoredResponses:
    """Reading and deleting stored responses: needs only the store, not the engine (these
    routes answer while the model loads)."""

    def __init__(self, store: ResponseStore | None) -> None:
        self.store = store

    async def _record(self, response_id: str, owner: str) -> StoredResponse:
        if self.store is None:
            raise not_found(response_id)
        record = await _from_store(self.store.get(response_id, owner))
        if record is None:
            raise not_found(response_id)
        return record

    async def get(self, response_id: str, owner: str) -> dict[str, Any]:
        return (await self._record(response_id, owner)).response

    async def delete(self, response_id: str, owner: str) -> dict[str, Any]:
        if self.store is None:
            raise not_found(response_id)
        deleted = await _from_store(self.store.delete(response_id, owner))
        if not deleted:
            raise not_found(response_id)
        return {"id": response_id, "object": "response", "deleted": True}

    async def input_items(self, response_id: str, owner: str, *, limit: int, order: str,
                          after: str | None) -> dict[str, Any]:
        items = list((await self._record(response_id, owner)).input_items)
        if order == "desc":
            items.reverse()
        if after is not None:
            ids = [item["id"] for item in items]
            if after not in ids:
                raise InvalidRequest(f"No input item {after!r} in this response.", param="after")
            items = items[ids.index(after) + 1:]
        page = items[:limit]
        return {"object": "list", "data": page, "has_more": len(items) > limit,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None}


class ResponsesService(StoredResponses):
    def __init__(self, chat: ChatService, store: ResponseStore | None) -> None:
        super().__init__(store)
        self.chat = chat

    # -- create ------------------------------------------------------------------------
    async def _history(self, req: ResponsesRequest, owner: str) -> list[dict[str, Any]]:
        if req.previous_response_id is None:
            return []
        if self.store is None:
            raise InvalidRequest("'previous_response_id' needs stored responses, which are off on "
                                 "this server; send the whole conversation in 'input'.",
                                 param="previous_response_id", code="store_disabled")
        try:
            chain = await _from_store(self.store.chain(req.previous_response_id, owner))
        except ChainBroken as exc:
            raise broken_chain(req.previous_response_id, exc.missing) from None
        except ChainTooLong as exc:
            raise chain_too_long(req.previous_response_id, exc) from None
        return [item for record in chain for item in (*record.input_items, *record.response["output"])]

    async def _can_keep(self, req: ResponsesRequest) -> bool:
        """Whether this response will be stored. An explicit ``store: true`` needs a store that
        answers (503 otherwise) and one at all (400 when storing is off); the default (SDKs never
        send ``store``) degrades to not storing, which the response says (``store: false``)."""
        explicit = "store" in req.model_fields_set
        if req.store and explicit and self.store is None:
            raise InvalidRequest("'store': true needs stored responses, which are off on this "
                                 "server; send 'store': false (or leave it out) and keep the "
                                 "conversation yourself.", param="store", code="store_disabled")
        if not req.store or self.store is None:
            return False
        if req.previous_response_id is not None:
            return True  # the chain was just read from it
        try:
            await self.store.ping()
        except StoreUnavailable as exc:
            if explicit:
                raise store_down(exc) from None
            log.warning("response store unavailable (%s): this response is not stored", exc)
            return False
        return True

    async def start(self, req: ResponsesRequest, owner: str) -> Run:
        """Validate everything; a stream also starts generating (engine-side 4xxs included),
        a JSON answer does that inside ``complete`` (where a client that leaves is noticed)."""
        history = await self._history(req, owner)
        keep = await self._can_keep(req)
        items = canonical_input(req)
        skeleton = self._skeleton(req, keep)
        text_input = isinstance(req.input, str)
        record_budget = self.store.limits.record_budget if keep and self.store else None
        try:
            encoded_items = budget.check(items, skeleton, record_budget, text_input)
        except InvalidRequest as err:
            # Too big to keep: an explicit store: true is refused; the default (what SDKs send)
            # is answered without storing, which the response says (store: false).
            if err.code != "store_record_too_large" or "store" in req.model_fields_set:
                raise
            log.info("response not stored: %s", err.message)
            keep, skeleton["store"] = False, False
            encoded_items = budget.check(items, skeleton, None, text_input)
        chat_req, conv = to_chat(req, history, items, self.chat.budgets)
        try:
            prep = await self.chat.prepare(chat_req)
        except APIError as err:
            raise rename_param(err, conv) from None
        skeleton.update(created_at=prep.created,
                        temperature=_or(prep.plan.sampling.temperature, 1.0),
                        top_p=_or(prep.plan.sampling.top_p, 1.0))
        builder = ResponseBuilder(skeleton)
        steps = self.chat.steps(prep)
        if req.stream:
            try:
                steps = await primed(steps)
            except APIError as err:
                raise rename_param(err, conv) from None
        return Run(req, owner, prep, items, encoded_items, conv, builder, steps)

    def _skeleton(self, req: ResponsesRequest, keep: bool) -> dict[str, Any]:
        """The response without its output; ``created_at``, ``temperature`` and ``top_p`` are
        settled once the chat request is prepared."""
        fmt = req.text.format.model_dump(by_alias=True, exclude_none=True)
        choice = req.tool_choice
        if isinstance(choice, dict):  # {"type": "function", "name": ...}; others: to_chat's 400
            choice = {"type": choice.get("type"), "name": choice.get("name")}
        return {
            "id": f"resp_{uuid.uuid4().hex}", "object": "response", "created_at": 0,
            "status": "in_progress", "completed_at": None, "error": None, "incomplete_details": None,
            "instructions": req.instructions, "max_output_tokens": req.max_output_tokens,
            "model": self.chat.model.id, "output": [], "parallel_tool_calls": req.parallel_tool_calls,
            "previous_response_id": req.previous_response_id,
            "reasoning": ({"effort": req.reasoning.effort, "summary": req.reasoning.summary}
                          if req.reasoning else None),
            "store": keep,
            "temperature": 1.0, "top_p": 1.0, "text": {"format": fmt}, "tool_choice": choice,
            "tools": [{"type": "function", "name": t.get("name"), "description": t.get("description"),
                       "parameters": t.get("parameters"), "strict": t.get("strict")} for t in req.tools],
            "top_logprobs": req.top_logprobs, "truncation": "disabled",
            **({"user": req.user} if req.user is not None else {}), "metadata": req.metadata or {}, "background": False,
            "max_tool_calls": None, "service_tier": "default",
            "safety_identifier": req.safety_identifier, "prompt_cache_key": req.prompt_cache_key,
        }

    async def complete(self, run: Run) -> dict[str, Any]:
        run.builder.start()
        try:
            async for delta, step in run.steps:
                run.push(delta, step)
        except APIError as err:
            raise rename_param(err, run.conv) from None
        finally:
            await run.steps.aclose()
        run.finish()
        await self._keep(run)
        return run.builder.response

    async def stream(self, run: Run) -> AsyncIterator[bytes]:
        """SSE: ``event: <type>`` + ``data: <event>``; the frames of one engine step go out
        together. The response is stored before its last event goes out, so a client that
        chains at once finds it."""
        builder = run.builder
        try:
            yield _frames(builder.start())
            async for delta, step in run.steps:
                events = run.push(delta, step)
                if events:
                    yield _frames(events)
            last = run.finish()
        except APIError as err:
            log.warning("response stream %s failed: %s", builder.response["id"], err.message)
            last = builder.fail("server_error", err.message)
        except Exception:  # noqa: BLE001 - the stream still ends with response.failed
            log.exception("response stream %s failed", builder.response["id"])
            last = builder.fail("server_error", "The server failed while generating this response.")
        finally:
            await run.steps.aclose()
        await self._keep(run)
        yield _frames([*last, builder.terminal()])

    async def _keep(self, run: Run) -> None:
        """Store the settled response. Generation is done: if the store fails now, the client
        still gets its answer, marked ``store: false`` (and the server logs why)."""
        if not run.keep:
            return
        response = run.builder.response
        record = StoredResponse(id=response["id"], owner=run.owner, created_at=response["created_at"],
                                previous_response_id=run.req.previous_response_id,
                                response=response, input_items=run.items,
                                encoded_items=run.encoded_items)
        try:
            await self.store.put(record)  # type: ignore[union-attr]
        except StoreUnavailable as exc:
            log.error("response %s was not stored: %s", response["id"], exc)
            response["store"] = False
        except Exception:  # noqa: BLE001 - the answer was generated: it still goes out
            log.exception("response %s was not stored", response["id"])
            response["store"] = False

def _frames(events: list[dict[str, Any]]) -> bytes:
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n"
                    for e in events)


def _or(value: float | None, default: float) -> float:
    return default if value is None else value
