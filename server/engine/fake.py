"""A scripted engine with the real engine's interface, for API tests and frontend benchmarks.

``FakeEngine(script)``: ``script(prompt_ids, sampling, choice_index) -> list[int]`` gives the
tokens a choice would produce (ending with the EOS id to finish with "stop"). The fake honours
``max_tokens`` (finish "length"), ``min_tokens``/``ignore_eos``, ``n``, logprobs and prompt
logprobs (with the first step, as vLLM sends them), yields one token per step like the real
engine, records aborts, and can fail mid-stream on demand.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from server.engine.base import CompletionDelta, EngineDead, SamplingSpec, TokenLogprob

Script = Callable[[list[int], SamplingSpec, int], list[int]]


class FakeEngine:
    def __init__(
        self,
        script: Script,
        *,
        eos_id: int = 2,
        max_model_len: int = 4096,
        step_delay: float = 0.0,
        fail_after: int | None = None,
    ) -> None:
        self.script = script
        self.eos_id = eos_id
        self.max_model_len = max_model_len
        self.max_num_seqs = 256
        self.step_delay = step_delay
        self.fail_after = fail_after
        self.aborted: list[str] = []
        self.finished: list[str] = []
        self.requests: list[tuple[list[int], SamplingSpec, str]] = []
        self.images: dict[str, list[Any]] = {}  # request id -> the images it was given
        self.running: set[str] = set()
        self.dead = False
        self.warmed_up = False

    async def generate(
        self, prompt_token_ids: list[int], sampling: SamplingSpec, request_id: str,
        *, images: Sequence[Any] = (),
    ) -> AsyncIterator[list[CompletionDelta]]:
        if self.dead:
            raise EngineDead("engine is dead")
        self.requests.append((list(prompt_token_ids), sampling, request_id))
        self.images[request_id] = list(images)
        plans = [self._plan(prompt_token_ids, sampling, i) for i in range(sampling.n)]
        self.running.add(request_id)
        prompt_lps = self._prompt_logprobs(prompt_token_ids, sampling)
        try:
            step = 0
            while any(plans):
                if self.fail_after is not None and step >= self.fail_after:
                    raise EngineDead("scripted engine failure")
                if self.dead:
                    raise EngineDead("engine is dead")
                if self.step_delay:
                    await asyncio.sleep(self.step_delay)
                else:
                    await asyncio.sleep(0)
                batch = []
                for index, plan in enumerate(plans):
                    if plan:
                        token, reason = plan.pop(0)
                        batch.append(CompletionDelta(
                            index=index,
                            token_ids=[token],
                            logprobs=self._logprobs(token, sampling),
                            finish_reason=reason,
                            prompt_logprobs=prompt_lps if step == 0 else None,
                        ))
                step += 1
                yield batch
            self.finished.append(request_id)
        except (asyncio.CancelledError, GeneratorExit):
            self.aborted.append(request_id)
            raise
        finally:
            self.running.discard(request_id)

    def _plan(self, prompt: list[int], sampling: SamplingSpec, index: int) -> list[tuple[int, str | None]]:
        tokens = list(self.script(prompt, sampling, index))
        if sampling.ignore_eos:
            tokens = [t for t in tokens if t != self.eos_id]
            while len(tokens) < sampling.max_tokens:
                tokens.append(tokens[-1] if tokens else 1000)
        if self.eos_id in tokens:
            cut = tokens.index(self.eos_id)
            if cut < sampling.min_tokens:
                tokens = [t for t in tokens if t != self.eos_id][: sampling.max_tokens]
            else:
                tokens = tokens[: cut + 1]
        budget = min(sampling.max_tokens, self.max_model_len - len(prompt))
        plan: list[tuple[int, str | None]] = [(t, None) for t in tokens[:budget]]
        if not plan:
            return plan
        ended_by_eos = plan[-1][0] == self.eos_id or plan[-1][0] in sampling.stop_token_ids
        reason = "length" if len(plan) == budget and not ended_by_eos else "stop"
        plan[-1] = (plan[-1][0], reason)
        return plan

    @staticmethod
    def _logprobs(token: int, sampling: SamplingSpec) -> list[TokenLogprob] | None:
        if sampling.logprobs is None:
            return None
        chosen = -0.5
        top = [(token, chosen)] + [(token + k, -1.0 - k) for k in range(1, sampling.logprobs)]
        return [TokenLogprob(logprob=chosen, top=tuple(top[: sampling.logprobs]))]

    @classmethod
    def _prompt_logprobs(cls, prompt: list[int], sampling: SamplingSpec) -> list[TokenLogprob | None] | None:
        if sampling.prompt_logprobs is None:
            return None
        return [None] + [cls._logprobs(t, SamplingSpec(logprobs=sampling.prompt_logprobs))[0]
                         for t in prompt[1:]]

    async def abort(self, request_id: str) -> None:
        if request_id not in self.aborted:
            self.aborted.append(request_id)

    async def warm_up(self) -> None:
        self.warmed_up = True

    async def check_health(self) -> None:
        if self.dead:
            raise EngineDead("engine is dead")

    async def shutdown(self) -> None:
        return None

    def engine_died(self) -> None:
        self.dead = True  # requests in flight fail at their next step

