"""``/v1/messages`` through the whole HTTP stack over the scripted engine, on every tokenizer
generation: every block type and request field both ways, tool-use ids, thinking, the stream's
events — each message and event validated with the ``anthropic`` SDK's own types, and each
stream rebuilt with the SDK's own accumulator."""

from __future__ import annotations

import json
import re

import pytest

from tests.anthropic_spec import (
    accumulate,
    assert_count,
    assert_message,
    assert_sequence,
    same_content,
    stream_events,
)
from tests.api.harness import MODEL, serve
from tests.api.test_tools import Script

KINDS = ["v3-spm", "v7-tekken", "v11-tekken", "v13-tekken"]
WEATHER = {"name": "get_weather", "description": "Weather in a city.", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string"},
                                     "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city"]}}
ARGS = '{"city": "Paris", "unit": "celsius"}'
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


def call_tokens(s: Script, kind: str, *calls: tuple[str, str], text: str = "") -> list[int]:
    """The model's own call format for ``calls`` ((name, raw argument JSON), …)."""
    if kind in ("v11-tekken", "v13-tekken"):
        parts = [p for name, args in calls for p in ("[TOOL_CALLS]", name, "[ARGS]", args)]
    else:
        items = ", ".join(f'{{"name": "{name}", "arguments": {args}}}' for name, args in calls)
        parts = ["[TOOL_CALLS]", (" " if kind == "v3-spm" else "") + f"[{items}]"]
    return s.ids(*([text] if text else []), *parts)


def create(client, **body):
    body.setdefault("model", MODEL)
    body.setdefault("max_tokens", 256)
    body.setdefault("messages", QUESTION)
    return client.post("/v1/messages", json=body)


def both(client, **body) -> tuple[dict, list[dict], dict]:
    """The JSON answer, the stream's events and the SDK's message from them, checked to agree."""
    r = create(client, **body)
    assert r.status_code == 200, r.text
    message = r.json()
    assert_message(message)
    events = stream_events(create(client, stream=True, **body))
    assert_sequence(events)
    streamed = accumulate(events)
    same_content(message, streamed)
    return message, events, streamed


def prompt_text(s: Script, fake, index: int = -1) -> str:
    return s.inner.decode(fake.requests[index][0], special_token_policy=1).replace("▁", " ")


@pytest.mark.parametrize("kind", KINDS)
def test_text_json_stream_and_count_tokens_agree(tokenizer_dirs, kind):
    s = Script(tokenizer_dirs, kind)
    tokens = s.ids("Paris is sunny today.")
    with serve(s.dir, lambda p, sp, i: tokens) as (client, _):
        message, events, _ = both(client, system="Be brief.", temperature=0.5, metadata={"user_id": "u1"})
        count = client.post("/v1/messages/count_tokens",
                            json={"model": MODEL, "messages": QUESTION, "system": "Be brief."})
    assert message["model"] == MODEL and message["content"] == [{"type": "text", "text": "Paris is sunny today."}]
    assert message["stop_reason"] == "end_turn" and message["stop_sequence"] is None
    assert message["usage"]["output_tokens"] == len(tokens)
    assert assert_count(count.json()) == message["usage"]["input_tokens"]
    start = events[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] == message["usage"]["input_tokens"]
    assert events[1] == {"type": "ping"}
    assert events[-2]["usage"]["output_tokens"] == len(tokens)


@pytest.mark.parametrize("kind", KINDS)
def test_tool_use_every_generation(tokenizer_dirs, kind):
    s = Script(tokenizer_dirs, kind)
    tokens = call_tokens(s, kind, ("get_weather", ARGS))
    with serve(s.dir, lambda p, sp, i: tokens) as (client, _):
        message, events, streamed = both(client, tools=[WEATHER])
    (use,) = message["content"]
    assert use["type"] == "tool_use" and use["name"] == "get_weather"
    assert use["input"] == json.loads(ARGS)
    assert re.fullmatch(r"toolu_[A-Za-z0-9]{9}", use["id"])
    assert message["stop_reason"] == "tool_use"
    fragments = "".join(e["delta"]["partial_json"] for e in events
                        if e["type"] == "content_block_delta")
    assert json.loads(fragments) == use["input"] == streamed["content"][0]["input"]


@pytest.mark.parametrize("kind", KINDS)
def test_two_turn_tool_loop_maps_ids(tokenizer_dirs, kind):
    s = Script(tokenizer_dirs, kind)
    answers = iter([call_tokens(s, kind, ("get_weather", ARGS)), s.ids("It is 18 degrees.")])
    with serve(s.dir, lambda p, sp, i: next(answers)) as (client, fake):
        first = create(client, tools=[WEATHER]).json()
        (use,) = first["content"]
        history = [*QUESTION, {"role": "assistant", "content": first["content"]},
                   {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use["id"],
                                                 "content": "18 degrees"}]}]
        second = create(client, tools=[WEATHER], messages=history)
        prompt = prompt_text(s, fake)
    assert second.status_code == 200, second.text
    assert assert_message(second.json()).content[0].text == "It is 18 degrees."
    assert "18 degrees" in prompt
    if kind in ("v3-spm", "v7-tekken"):  # these formats carry the ids in the prompt
        assert prompt.count(use["id"].removeprefix("toolu_")) == 2, prompt


def test_foreign_ids_are_mapped_consistently_and_kept_apart(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v7-tekken")
    ids = ["toolu_01D7FLrfh4GYq7yT1ULFeyMV", "toolu_abcdefghi", "abcdefghi"]
    uses = [{"type": "tool_use", "id": i, "name": "get_weather", "input": {"city": c}}
            for i, c in zip(ids, ["Paris", "Lyon", "Nice"])]
    results = [{"type": "tool_result", "tool_use_id": i, "content": f"result {n}"} for n, i in enumerate(ids)]
    history = [*QUESTION, {"role": "assistant", "content": uses}, {"role": "user", "content": results}]
    with serve(s.dir, lambda p, sp, i: s.ids("Done.")) as (client, fake):
        r = create(client, tools=[WEATHER], messages=history)
        prompt = prompt_text(s, fake)
    assert r.status_code == 200, r.text
    mistral_ids = re.findall(r'"id": "([A-Za-z0-9]{9})"', prompt)
    result_ids = re.findall(r'\[TOOL_RESULTS\]([A-Za-z0-9]{9})\[TOOL_CONTENT\]', prompt)
    assert len(set(mistral_ids)) == 3 and mistral_ids == result_ids, prompt
    assert "abcdefghi" in mistral_ids  # ours (toolu_ + 9) map back to the 9 characters


def test_stream_of_thinking_text_and_two_tool_calls(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v13-tekken")
    tokens = (s.ids("[THINK]", "Two cities.", "[/THINK]", "Checking both.", eos=False)
              + call_tokens(s, "v13-tekken", ("get_weather", '{"city": "Paris"}'),
                            ("get_weather", '{"city": "Lyon"}')))
    with serve(s.dir, lambda p, sp, i: tokens) as (client, _):
        message, events, streamed = both(client, tools=[WEATHER])
    shape = []
    for e in events:
        label = e["type"]
        if label == "content_block_start":
            label += ":" + e["content_block"]["type"]
        if label == "content_block_delta":
            label += ":" + e["delta"]["type"]
        if not shape or shape[-1] != label:
            shape.append(label)
    assert shape == [
        "message_start", "ping",
        "content_block_start:thinking", "content_block_delta:thinking_delta",
        "content_block_delta:signature_delta", "content_block_stop",
        "content_block_start:text", "content_block_delta:text_delta", "content_block_stop",
        "content_block_start:tool_use", "content_block_delta:input_json_delta", "content_block_stop",
        "content_block_start:tool_use", "content_block_delta:input_json_delta", "content_block_stop",
        "message_delta", "message_stop"]
    thinking, text, paris, lyon = message["content"]
    assert thinking["thinking"] == "Two cities." and thinking["signature"] == streamed["content"][0]["signature"]
    assert text["text"] == "Checking both."
    assert (paris["input"], lyon["input"]) == ({"city": "Paris"}, {"city": "Lyon"})
    assert paris["id"] != lyon["id"] and message["stop_reason"] == "tool_use"


def _thinker(s: Script):
    """A reasoning model that thinks unless [THINK] is made unreachable."""
    think = s.inner.get_special_token("[THINK]")

    def script(prompt, sampling, index):
        if sampling.logit_bias and sampling.logit_bias.get(think, 0) <= -100:
            return s.ids("Straight to it.")
        return s.ids("[THINK]", "Hmm.", "[/THINK]", "Straight to it.")
    return script


def test_thinking_on_off_and_omitted_on_a_reasoning_model(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v13-tekken")
    with serve(s.dir, _thinker(s), reasoning_system_prompt="Think step by step.") as (client, fake):
        default = create(client).json()
        default_prompt = prompt_text(s, fake)
        enabled, _, _ = both(client, thinking={"type": "enabled", "budget_tokens": 1024}, max_tokens=2048)
        enabled_prompt = prompt_text(s, fake)
        adaptive = create(client, thinking={"type": "adaptive"}).json()
        disabled, _, _ = both(client, thinking={"type": "disabled"})
        omitted, events, _ = both(client, thinking={"type": "adaptive", "display": "omitted"})
    for body in (default, enabled, adaptive):
        assert [b["type"] for b in body["content"]] == ["thinking", "text"], body
        assert body["content"][0]["thinking"] == "Hmm."
    assert "Think step by step." in enabled_prompt and "Think step by step." not in default_prompt
    assert disabled["content"] == [{"type": "text", "text": "Straight to it."}]
    thinking = omitted["content"][0]
    assert thinking["type"] == "thinking" and thinking["thinking"] == "" and thinking["signature"]
    assert not any(e.get("delta", {}).get("type") == "thinking_delta" for e in events)


def test_budget_tokens_bound_the_thinking_in_the_engine(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v13-tekken")
    with serve(s.dir, _thinker(s), reasoning_system_prompt="Think step by step.") as (client, fake):
        create(client, thinking={"type": "enabled", "budget_tokens": 1500}, max_tokens=2048)
        enabled = fake.requests[-1][1]
        create(client, thinking={"type": "adaptive"})
        adaptive = fake.requests[-1][1]
        create(client)
        default = fake.requests[-1][1]
    assert enabled.thinking_token_budget == 1500
    assert adaptive.thinking_token_budget is None and default.thinking_token_budget is None


def test_thinking_is_accepted_and_ignored_elsewhere(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v7-tekken")
    with serve(s.dir, lambda p, sp, i: s.ids("Hello.")) as (client, fake):
        plain = create(client)
        prompt = fake.requests[-1][0]
        on = create(client, thinking={"type": "enabled", "budget_tokens": 2000}, max_tokens=4000)
        off = create(client, thinking={"type": "disabled"})
    for r in (plain, on, off):
        assert assert_message(r.json()).content[0].text == "Hello."
    assert fake.requests[-1][0] == fake.requests[-2][0] == prompt
    assert fake.requests[-2][1].thinking_token_budget is None  # no [THINK] token to bound


def test_every_request_block_reaches_the_prompt(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v7-tekken")
    cache = {"cache_control": {"type": "ephemeral"}}
    history = [
        {"role": "user", "content": [
            {"type": "text", "text": "<reminder>Be kind.</reminder>", **cache},
            {"type": "text", "text": "Check two cities."},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain",
                                            "data": "Cities: Paris, Lyon."}, "title": "notes"}]},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "SECRET-THOUGHT", "signature": "anything"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "text", "text": "Looking them up."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}, **cache},
            {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {"city": "Lyon"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                {"type": "text", "text": "18 degrees"}, {"type": "text", "text": "sunny"}]},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": "city not found", "is_error": True},
            {"type": "text", "text": "Summarise."}]},
    ]
    body = {"system": [{"type": "text", "text": "You are terse.", **cache},
                       {"type": "text", "text": "Answer in English."}],
            "tools": [{**WEATHER, **cache, "type": "custom"}], "messages": history,
            "context_management": {"edits": []}, "service_tier": "auto", "container": None,
            "output_config": {"effort": "high"}}
    with serve(s.dir, lambda p, sp, i: s.ids("Paris 18, Lyon unknown.")) as (client, fake):
        r = client.post("/v1/messages?beta=true", headers={"anthropic-beta": "interleaved-thinking-2025-05-14",
                                                           "anthropic-version": "2023-06-01"},
                        json={"model": MODEL, "max_tokens": 64, **body})
        prompt = prompt_text(s, fake)
        count = client.post("/v1/messages/count_tokens?beta=true", json={"model": MODEL, **body})
    assert r.status_code == 200, r.text
    assert assert_count(count.json()) == r.json()["usage"]["input_tokens"]
    for piece in ("You are terse.\n\nAnswer in English.", "<reminder>Be kind.</reminder>\n\nCheck two cities.",
                  "Cities: Paris, Lyon.", "Looking them up.", "18 degrees\n\nsunny",
                  "Error: city not found", "Summarise.", "get_weather"):
        assert piece in prompt, (piece, prompt)
    assert "SECRET-THOUGHT" not in prompt and "opaque" not in prompt
    assert prompt.index("Error: city not found") < prompt.index("Summarise.")


def test_tool_choice_forms(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v11-tekken")
    other = {**WEATHER, "name": "get_time"}
    two = call_tokens(s, "v11-tekken", ("get_weather", '{"city":"Paris"}'), ("get_weather", '{"city":"Lyon"}'))
    with serve(s.dir, lambda p, sp, i: two) as (client, fake):
        forced_any, _, _ = both(client, tools=[WEATHER, other], tool_choice={"type": "any"})
        any_grammar = fake.requests[-1][1].constraint
        forced_tool = create(client, tools=[WEATHER, other], tool_choice={"type": "tool", "name": "get_weather"})
        tool_grammar = fake.requests[-1][1].constraint
        single = create(client, tools=[WEATHER], tool_choice={"type": "auto", "disable_parallel_tool_use": True})
        auto = create(client, tools=[WEATHER], tool_choice={"type": "auto"})
        auto_constraint = fake.requests[-1][1].constraint
        none = create(client, tools=[WEATHER], tool_choice={"type": "none"})
    assert any_grammar.kind == "grammar" and "get_time" in any_grammar.value
    assert tool_grammar.kind == "grammar" and "get_time" not in tool_grammar.value
    assert [b["input"]["city"] for b in forced_any["content"]] == ["Paris", "Lyon"]
    assert forced_tool.json()["stop_reason"] == "tool_use"
    assert [b["input"] for b in single.json()["content"]] == [{"city": "Paris"}]
    assert len(auto.json()["content"]) == 2 and auto_constraint is None
    assert none.json()["stop_reason"] == "end_turn"
    assert all(b["type"] == "text" for b in none.json()["content"])


def test_sampling_stop_sequences_and_prefill(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v11-tekken")
    with serve(s.dir, lambda p, sp, i: s.ids("Hello STOP and more.")) as (client, fake):
        stopped, _, _ = both(client, stop_sequences=["STOP", "never"], temperature=0.3, top_p=0.8, top_k=5,
                             seed=7, ignore_eos=True, vllm_xargs={"script": [1]}, min_p=None)
        sampling = fake.requests[-1][1]
        prefill = create(client, messages=[*QUESTION, {"role": "assistant", "content": "The answer:"}])
        prompt = prompt_text(s, fake)
    assert stopped["stop_reason"] == "stop_sequence" and stopped["stop_sequence"] == "STOP"
    assert stopped["content"] == [{"type": "text", "text": "Hello "}]
    assert (sampling.temperature, sampling.top_p, sampling.top_k) == (0.3, 0.8, 5)
    # vLLM's extras through extra_body, with their chat meaning
    assert (sampling.seed, sampling.ignore_eos, sampling.extra_args) == (7, True, {"script": [1]})
    assert prompt.rstrip().endswith("The answer:")  # continued, not a new turn
    assert prefill.json()["content"][0]["text"] == "Hello STOP and more."


def test_max_tokens_and_the_context_window(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v3-spm")
    long = s.ids("word " * 600, eos=False)
    with serve(s.dir, lambda p, sp, i: long, max_model_len=512) as (client, fake):
        short = create(client, max_tokens=5).json()
        huge, _, _ = both(client, max_tokens=64000)
        room = fake.requests[-1][1].max_tokens
        prompt_len = len(fake.requests[-1][0])
    assert short["stop_reason"] == "max_tokens" and short["usage"]["output_tokens"] == 5
    assert huge["stop_reason"] == "model_context_window_exceeded"
    assert room == 512 - prompt_len == huge["usage"]["output_tokens"]


def test_output_config_format_constrains_json(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v11-tekken")
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    with serve(s.dir, lambda p, sp, i: s.ids('{"city":"Paris"}')) as (client, fake):
        new = create(client, output_config={"format": {"type": "json_schema", "schema": schema}})
        new_constraint = fake.requests[-1][1].constraint
        beta = create(client, output_format={"type": "json_schema", "schema": schema})
        beta_constraint = fake.requests[-1][1].constraint
    assert json.loads(new.json()["content"][0]["text"]) == {"city": "Paris"}
    assert beta.status_code == 200
    for constraint in (new_constraint, beta_constraint):
        assert constraint is not None and constraint.kind == "json"


def test_malformed_tool_arguments_never_break_the_stream(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v11-tekken")
    tokens = call_tokens(s, "v11-tekken", ("get_weather", '{"city": "Par'), text="")[:-1] + \
        s.ids(' oops not json"}')
    with serve(s.dir, lambda p, sp, i: tokens) as (client, _):
        message, events, streamed = both(client, tools=[WEATHER])
    (use,) = message["content"]
    assert use["input"] == streamed["content"][0]["input"]
    sent = "".join(e["delta"].get("partial_json", "") for e in events if e["type"] == "content_block_delta")
    assert sent.startswith('{"city"')


def test_claude_model_names_only_when_enabled(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v3-spm")
    with serve(s.dir, lambda p, sp, i: s.ids("Hi.")) as (client, _):
        refused = create(client, model="claude-sonnet-4-5-20250929")
    with serve(s.dir, lambda p, sp, i: s.ids("Hi."), accept_claude_models=True) as (client, _):
        accepted = create(client, model="claude-sonnet-4-5-20250929")
        other = create(client, model="gpt-4o")
    assert refused.status_code == 404 and other.status_code == 404
    assert accepted.status_code == 200 and accepted.json()["model"] == MODEL


def test_thinking_is_reasoning_effort_on_v15(tokenizer_dirs, tmp_path_factory):
    from tests.api.test_mistral_api import v15_dir

    directory = v15_dir.__wrapped__(tmp_path_factory)
    s = Script({"v15-tekken": directory}, "v15-tekken")
    with serve(directory, lambda p, sp, i: s.ids("Fine.")) as (client, fake):
        prompts = {}
        for kind in ("enabled", "adaptive", "disabled"):
            extra = {"budget_tokens": 1024} if kind == "enabled" else {}
            r = create(client, max_tokens=2048, thinking={"type": kind, **extra})
            assert r.status_code == 200, r.text
            prompts[kind] = prompt_text(s, fake)
        create(client)
        prompts["absent"] = prompt_text(s, fake)
    for kind, effort in (("enabled", "high"), ("adaptive", "high"), ("disabled", "none")):
        assert f'[MODEL_SETTINGS]{{"reasoning_effort": "{effort}"}}[/MODEL_SETTINGS]' in prompts[kind]
    assert "reasoning_effort" not in prompts["absent"]
    assert fake.requests[-2][1].logit_bias is None  # disabled: the settings say so, no bias


def test_system_messages_inside_the_conversation(tokenizer_dirs):
    """Claude Code sends a system message after the user's: the prompt still ends with the user's
    turn (where Mistral models answer); after tool results (where Mistral prompts take no system
    prompt) its text is the user's next turn."""
    s = Script(tokenizer_dirs, "v11-tekken")
    late = {"role": "system", "content": "Agents: none."}
    with serve(s.dir, lambda p, sp, i: s.ids("Hi.")) as (client, fake):
        plain = create(client, messages=[*QUESTION, late])
        moved = prompt_text(s, fake)
        uses = [*QUESTION, {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
                                                              "name": "get_weather", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18"}]},
                late]
        after_tools = create(client, tools=[WEATHER], messages=uses)
        kept = prompt_text(s, fake)
        bad = create(client, messages=[{"role": "user", "content": [{"type": "text"}]}, late])
    assert plain.status_code == after_tools.status_code == 200, after_tools.text
    assert moved.index("Agents: none.") < moved.index("What is the weather") and moved.endswith("[/INST]")
    # after tool results a system prompt may not come: the text is the user's next turn
    assert kept.endswith("[INST]Agents: none.[/INST]") and kept.index("[/TOOL_RESULTS]") < kept.index("Agents")
    assert bad.json()["error"]["message"].startswith("messages.0.content.0.text: ")
