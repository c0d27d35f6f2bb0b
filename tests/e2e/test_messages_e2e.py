"""``/v1/messages`` on the real engine with the official ``anthropic`` SDK: create, stream
(text, thinking, tool input), forced tool use from the random model satisfying the schema, a
two-turn tool loop with ``toolu_`` ids, ``count_tokens``, images on the tiny vision model,
errors as SDK exceptions — and Claude Code's CLI (from the npm registry) run with ``-p``
against the tiny model, with every connection it opens checked to stay on this machine."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import anthropic
import pytest
from jsonschema import validate

from tests.anthropic_spec import assert_message
from tests.api.test_images import picture
from tests.e2e.conftest import CACHE, ROOT, SCRIPTED, start_server, stop_server
from tests.e2e.test_tools_e2e import model_id, script, tokenizers  # noqa: F401 - fixture

pytestmark = pytest.mark.e2e

README = (ROOT / "README.md").read_text()

WEATHER = {"name": "get_weather", "description": "Weather in a city.", "input_schema": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
    "additionalProperties": False}}
TIME = {"name": "get_time", "description": "The time in a zone.", "input_schema": {
    "type": "object", "properties": {"zone": {"type": "string", "enum": ["UTC", "CET"]},
                                     "precise": {"type": "boolean"}},
    "required": ["zone", "precise"], "additionalProperties": False}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
CALL = {"v3-spm": ("[TOOL_CALLS]", '[{"name": "get_weather", "arguments": {"city": "Paris"}}]'),
        "v13-tekken": ("[TOOL_CALLS]", "get_weather", "[ARGS]", '{"city": "Paris"}')}


def client(server, **kw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0, timeout=300, **kw)


def scripted(tok, *parts) -> dict:
    return {"extra_body": {"vllm_xargs": {"script": script(tok, *parts)}}}


def test_create_stream_and_count_tokens(tiny_server, tokenizers):
    tok, sdk, model = tokenizers("v3-spm"), client(tiny_server), model_id(tiny_server)
    answer = "Paris is the capital of France."
    message = sdk.messages.create(model=model, max_tokens=64, system="Answer briefly.",
                                  messages=[{"role": "user", "content": "Capital of France?"}],
                                  **scripted(tok, answer))
    assert_message(message.model_dump(mode="json"))
    assert message.content[0].text == answer and message.stop_reason == "end_turn"
    assert message.usage.output_tokens == len(script(tok, answer)) + 1  # + EOS
    count = sdk.messages.count_tokens(model=model, system="Answer briefly.",
                                      messages=[{"role": "user", "content": "Capital of France?"}])
    assert count.input_tokens == message.usage.input_tokens
    with sdk.messages.stream(model=model, max_tokens=64, system="Answer briefly.",
                             messages=[{"role": "user", "content": "Capital of France?"}],
                             **scripted(tok, answer)) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == answer and final.content[0].text == answer
    assert final.usage.output_tokens == message.usage.output_tokens
    # this SDK has no sampling arguments (newer Claude models take none); the API still does
    random = sdk.messages.create(model=model, max_tokens=5, messages=ASK, extra_body={"temperature": 1.0})
    assert random.stop_reason == "max_tokens" and random.usage.output_tokens == 5
    stopped = sdk.messages.create(model=model, max_tokens=64, messages=ASK, stop_sequences=["capital"],
                                  **scripted(tok, answer))
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "capital"
    assert stopped.content[0].text == "Paris is the "


def test_stream_thinking_text_and_tool_input(v13_server, tokenizers):
    tok, sdk = tokenizers("v13-tekken"), client(v13_server)
    parts = ("[THINK]", "The user wants Paris.", "[/THINK]", "Let me check.", *CALL["v13-tekken"])
    kinds, fragments = [], []
    with sdk.messages.stream(model=model_id(v13_server), max_tokens=2048, tools=[WEATHER],
                             messages=ASK, thinking={"type": "enabled", "budget_tokens": 1024},
                             **scripted(tok, *parts)) as stream:
        for event in stream:
            kinds.append(event.type)
            if event.type == "input_json":
                fragments.append(event.partial_json)
        final = stream.get_final_message()
    thinking, text, use = final.content
    assert thinking.type == "thinking" and thinking.thinking == "The user wants Paris." and thinking.signature
    assert text.text == "Let me check."
    assert use.type == "tool_use" and use.name == "get_weather" and use.input == {"city": "Paris"}
    assert re.fullmatch(r"toolu_[A-Za-z0-9]{9}", use.id) and final.stop_reason == "tool_use"
    assert json.loads("".join(fragments)) == use.input
    assert {"thinking", "signature", "text", "input_json", "message_stop"} <= set(kinds)
    plain = sdk.messages.create(model=model_id(v13_server), max_tokens=256, tools=[WEATHER],
                                messages=ASK, thinking={"type": "disabled"},
                                **scripted(tok, "Straight answer."))
    assert [b.type for b in plain.content] == ["text"]


def test_budget_tokens_end_the_thinking(v13_server, tokenizers):
    """The engine writes [/THINK] once the thinking reaches budget_tokens (vLLM's thinking budget,
    configured by the server with the tokenizer's [THINK] ids); without it, the scripted model
    thinks to the end of its script."""
    tok, sdk, model = tokenizers("v13-tekken"), client(v13_server), model_id(v13_server)
    thought = " ".join(f"step {i} holds." for i in range(200))
    assert len(script(tok, thought)) > 1200
    parts = ("[THINK]", thought, "[/THINK]", "Done.")
    free = sdk.messages.create(model=model, max_tokens=2500, messages=ASK, **scripted(tok, *parts))
    bounded = sdk.messages.create(model=model, max_tokens=2500, messages=ASK,
                                  thinking={"type": "enabled", "budget_tokens": 1024},
                                  **scripted(tok, *parts))
    assert [b.type for b in free.content] == ["thinking", "text"] and free.content[0].thinking == thought
    thinking = bounded.content[0]
    assert thinking.type == "thinking" and thought.startswith(thinking.thinking)
    assert 1000 <= len(script(tok, thinking.thinking)) <= 1024
    # the script goes on after the forced [/THINK]: the rest of its thought becomes the answer
    assert bounded.content[1].type == "text" and bounded.content[1].text.endswith("Done.")


@pytest.mark.parametrize("server_name", ["tiny_server", "v11_server", "v13_server"])
def test_forced_tool_use_from_the_random_model_fits_the_schema(request, server_name):
    server = request.getfixturevalue(server_name)
    sdk, model = client(server), model_id(server)
    for seed in (1, 2):
        for choice in ({"type": "any"}, {"type": "tool", "name": "get_time"},
                       {"type": "any", "disable_parallel_tool_use": True}):
            message = sdk.messages.create(model=model, max_tokens=160, tools=[WEATHER, TIME],
                                          tool_choice=choice, messages=ASK,
                                          extra_body={"seed": seed, "temperature": 1.0})
            assert_message(message.model_dump(mode="json"))
            uses = [b for b in message.content if b.type == "tool_use"]
            assert uses and message.stop_reason in ("tool_use", "max_tokens"), message
            if message.stop_reason == "max_tokens":
                continue  # the random model may write long strings; the grammar still held
            if choice["type"] == "tool":
                assert {u.name for u in uses} == {"get_time"}
            if choice.get("disable_parallel_tool_use"):
                assert len(uses) == 1
            for use in uses:
                validate(use.input, {"get_weather": WEATHER, "get_time": TIME}[use.name]["input_schema"])


@pytest.mark.parametrize("server_name, kind", [("tiny_server", "v3-spm"), ("v13_server", "v13-tekken")])
def test_two_turn_tool_loop_with_toolu_ids(request, tokenizers, server_name, kind):
    server = request.getfixturevalue(server_name)
    tok, sdk, model = tokenizers(kind), client(server), model_id(server)
    first = sdk.messages.create(model=model, max_tokens=256, tools=[WEATHER], messages=ASK,
                                **scripted(tok, *CALL[kind]))
    (use,) = first.content
    assert use.id.startswith("toolu_") and use.input == {"city": "Paris"}
    history = [*ASK, {"role": "assistant", "content": first.content},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                             "content": [{"type": "text", "text": "18 degrees"}]}]}]
    second = sdk.messages.create(model=model, max_tokens=256, tools=[WEATHER], messages=history,
                                 **scripted(tok, "It is 18 degrees in Paris."))
    assert second.content[0].text == "It is 18 degrees in Paris." and second.stop_reason == "end_turn"
    assert second.usage.input_tokens > first.usage.input_tokens
    foreign = [*ASK, {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01D7FLrfh4GYq7yT1ULFeyMV",
                                                       "name": "get_weather", "input": {"city": "Paris"}}]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01D7FLrfh4GYq7yT1ULFeyMV",
                                             "content": "18 degrees", "is_error": False}]}]
    third = sdk.messages.create(model=model, max_tokens=32, tools=[WEATHER], messages=foreign,
                                **scripted(tok, "Done."))
    assert third.content[0].text == "Done."


@pytest.mark.parametrize("name", ["v11_vision_server", "v13_vision_server"])
def test_images_reach_the_model(request, name):
    server = request.getfixturevalue(name)
    sdk, model = client(server), model_id(server)

    def ask(*blocks):
        return [{"role": "user", "content": [{"type": "text", "text": "Describe:"}, *blocks]}]

    png = base64.b64encode(picture(3, (60, 40))).decode()
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}
    greedy = {"extra_body": {"temperature": 0}}
    with_image = sdk.messages.create(model=model, max_tokens=4, messages=ask(image), **greedy)
    text_only = sdk.messages.create(model=model, max_tokens=4, messages=ask(), **greedy)
    # a 60x40 image: 4x3 grid of [IMG] (12) + 2 [IMG_BREAK] + 1 [IMG_END]
    assert with_image.usage.input_tokens == text_only.usage.input_tokens + 15
    assert sdk.messages.count_tokens(model=model, messages=ask(image)).input_tokens == \
        with_image.usage.input_tokens
    in_result = [*ASK, {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_x",
                                                          "name": "get_weather", "input": {}}]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x",
                                               "content": [image]}]}]
    assert sdk.messages.create(model=model, max_tokens=4, tools=[WEATHER], messages=in_result).usage.input_tokens


def test_errors_are_sdk_exceptions(tiny_server):
    sdk, model = client(tiny_server), model_id(tiny_server)
    with pytest.raises(anthropic.NotFoundError) as missing:
        sdk.messages.create(model="claude-sonnet-4-5", max_tokens=8, messages=ASK)
    assert missing.value.type == "not_found_error" and "claude-sonnet-4-5" in missing.value.api_message
    with pytest.raises(anthropic.BadRequestError) as bad:
        sdk.messages.create(model=model, max_tokens=8, messages=ASK, extra_body={"temperature": 3})
    assert bad.value.type == "invalid_request_error" and bad.value.api_message.startswith("temperature: ")
    with pytest.raises(anthropic.BadRequestError) as unanswered:
        sdk.messages.create(model=model, max_tokens=8, messages=[*ASK, {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
            {"role": "user", "content": "next"}], tools=[WEATHER])
    assert unanswered.value.api_message.startswith("messages.2: ")
    with pytest.raises(anthropic.BadRequestError) as too_long:
        sdk.messages.count_tokens(model=model, messages=[{"role": "user", "content": "word " * 5000}])
    assert too_long.value.api_message.startswith("prompt is too long: ")
    with pytest.raises(anthropic.BadRequestError):
        with sdk.messages.stream(model=model, max_tokens=8, messages=ASK, tools=[WEATHER],
                                 tool_choice={"type": "tool", "name": "nope"}) as stream:
            stream.get_final_message()


# -- Claude Code ----------------------------------------------------------------------------------
CLAUDE_PACKAGE = "@anthropic-ai/claude-code"
CLAUDE_HOME = CACHE / "claude-code"


def claude_binary() -> Path:
    """Claude Code from the npm registry, installed once under .cache (its package ships the
    native binary in a per-platform dependency; no install script needs to run)."""
    found = sorted(CLAUDE_HOME.glob("node_modules/@anthropic-ai/claude-code-linux-*/claude"))
    if found:
        return found[0]
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: Claude Code's CLI cannot be installed here")
    CLAUDE_HOME.mkdir(parents=True, exist_ok=True)
    out = subprocess.run([npm, "install", "--no-fund", "--no-audit", "--ignore-scripts",
                          "--prefix", str(CLAUDE_HOME), CLAUDE_PACKAGE],
                         capture_output=True, text=True, timeout=600)
    found = sorted(CLAUDE_HOME.glob("node_modules/@anthropic-ai/claude-code-linux-*/claude"))
    if out.returncode != 0 or not found:
        pytest.skip(f"Claude Code did not install from the npm registry: {out.stderr[-500:]}")
    return found[0]


def _outside_connections(trace: str) -> list[str]:
    """connect() calls to an IP address that is not loopback, from an strace log."""
    outside = []
    for line in trace.splitlines():
        if "connect(" not in line:
            continue
        inet = re.search(r'inet_addr\("([\d.]+)"\)', line)
        inet6 = re.search(r'inet_pton\(AF_INET6, "([0-9a-f:.]+)"', line)
        if inet and not inet.group(1).startswith("127."):
            outside.append(line)
        if inet6 and inet6.group(1) not in ("::1", "::ffff:127.0.0.1"):
            outside.append(line)
    return outside


def readme_claude_block() -> str:
    """The README's Claude Code set-up, as a user would paste it."""
    section = README.split("### Claude Code", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)```", section, re.S)[0]


def test_claude_code_runs_against_the_tiny_model(pool, tokenizers, tmp_path):
    """The README's ``claude -p`` block, run as written — Claude Code's full default set-up
    (system prompt, 20-odd tools, adaptive thinking, ``?beta=true``, ``context_management``,
    a mid-conversation system message…: ~21k prompt tokens) — against the tiny v3 model, whose
    answer is scripted for every request (Claude Code cannot send ``vllm_xargs``). It must exit
    0 printing the model's text, and open no connection beyond loopback."""
    binary = claude_binary()
    answer = "Hello from the tiny model."
    ids = script(tokenizers("v3-spm"), answer)
    pool.make_room(1)
    server = start_server("claude-code", [
        "--served-model-name", "tiny-mistral", "--max-model-len", "32768", *SCRIPTED],
        env={"VLLM_ALLOW_LONG_MAX_MODEL_LEN": "1", "E2E_SCRIPT": ",".join(map(str, ids))})
    try:
        home, work = tmp_path / "home", tmp_path / "work"
        home.mkdir()
        work.mkdir()
        block = (readme_claude_block().replace("http://localhost:8000", server.url)
                 .replace("claude -p", f"{binary} -p"))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home)}
        strace = shutil.which("strace")
        trace = tmp_path / "connect.trace"
        command = ["bash", "-euo", "pipefail", "-c", block]
        if strace:
            command = [strace, "-f", "-qq", "-e", "trace=connect", "-o", str(trace), *command]
        run = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True,
                             timeout=900, stdin=subprocess.DEVNULL)
        log = server.log.read_text(errors="replace")
    finally:
        stop_server(server)
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-2000:], log[-3000:])
    assert answer in run.stdout, run.stdout
    assert "POST /v1/messages 200" in log
    if strace:
        outside = _outside_connections(trace.read_text())
        assert not outside, outside
