"""Test-only vLLM logits processor: makes a random-weight model emit an exact token script, and
can hold the engine still while a test looks at the server.

A request carrying ``vllm_xargs: {"script": [ids...]}`` gets, at output position ``i``, every
logit but ``script[i]`` pushed to -inf (then EOS once the script is done). Loaded by the engine
through the ``logits_processors`` setting as ``tests.e2e.scripted:ScriptedLogits``; requests
without a script are untouched — unless the server runs with ``E2E_SCRIPT`` (ids,
comma-separated) in its environment: then that is every such request's script (for clients
that cannot send ``vllm_xargs``, such as Claude Code). The whole serving path stays real: only
the choice of tokens is scripted.

``vllm_xargs: {"hold": "<file>", "hold_for": n}``: once ``n`` (default 1) such requests have
each produced ``HOLD_AT`` tokens, the engine stops in this processor while ``<file>`` exists (at
most ``HOLD_LIMIT`` seconds). The requests stay in flight, deterministically, until the test
deletes the file — instead of racing a generation that takes a few seconds here (a 2-core
machine stalls for seconds at a time while the CPU engine runs).
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

import torch
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

EOS = 2
HOLD_AT = 8  # output tokens a held request produces first (its stream is visibly running)
HOLD_LIMIT = 120.0
_arrived: dict[str, set[int]] = {}  # hold file -> requests that reached HOLD_AT
_deadlines: dict[str, float] = {}  # hold file -> when the hold ends whatever the file does
_ids = itertools.count()


class ScriptedLogits(AdapterLogitsProcessor):
    def is_argmax_invariant(self) -> bool:
        return False

    def new_req_logits_processor(self, params: Any) -> Any:
        extra = params.extra_args or {}
        script = extra.get("script") or _default_script()
        hold = extra.get("hold")
        if not script and not hold:
            return None
        script = [int(t) for t in script] if script else None
        hold_for, me = int(extra.get("hold_for", 1)), next(_ids)

        def force(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            position = len(output_ids)
            if hold and position >= HOLD_AT:
                _hold(hold, hold_for, me)
            if script is None:
                return logits
            target = script[position] if position < len(script) else EOS
            forced = torch.full_like(logits, float("-inf"))
            forced[target] = 0.0
            return forced

        return force


def _hold(path: str, hold_for: int, me: int) -> None:
    arrived = _arrived.setdefault(path, set())
    arrived.add(me)
    if len(arrived) < hold_for:
        return  # the others are not running yet: blocking now would keep them out of the engine
    deadline = _deadlines.setdefault(path, time.monotonic() + HOLD_LIMIT)  # per hold, not per step
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)


def _default_script() -> list[int] | None:
    raw = os.environ.get("E2E_SCRIPT", "").strip()
    return [int(t) for t in raw.split(",")] if raw else None
