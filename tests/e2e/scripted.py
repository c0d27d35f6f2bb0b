"""Test-only vLLM logits processor: makes a random-weight model emit an exact token script.

A request carrying ``vllm_xargs: {"script": [ids...]}`` gets, at output position ``i``, every
logit but ``script[i]`` pushed to -inf (then EOS once the script is done). Loaded by the engine
through the ``logits_processors`` setting as ``tests.e2e.scripted:ScriptedLogits``; requests
without a script are untouched — unless the server runs with ``E2E_SCRIPT`` (ids,
comma-separated) in its environment: then that is every such request's script (for clients
that cannot send ``vllm_xargs``, such as Claude Code). The whole serving path stays real: only
the choice of tokens is scripted.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

EOS = 2


class ScriptedLogits(AdapterLogitsProcessor):
    def is_argmax_invariant(self) -> bool:
        return False

    def new_req_logits_processor(self, params: Any) -> Any:
        script = (params.extra_args or {}).get("script") or _default_script()
        if not script:
            return None
        script = [int(t) for t in script]

        def force(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            position = len(output_ids)
            target = script[position] if position < len(script) else EOS
            forced = torch.full_like(logits, float("-inf"))
            forced[target] = 0.0
            return forced

        return force


def _default_script() -> list[int] | None:
    raw = os.environ.get("E2E_SCRIPT", "").strip()
    return [int(t) for t in raw.split(",")] if raw else None
