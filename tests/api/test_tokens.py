"""``/tokenize`` and ``/detokenize`` (vLLM's shapes): text prompts as ``/v1/completions``
tokenizes them, chat messages exactly as chat renders them (``count`` is the chat request's
``usage.prompt_tokens``), round trips on every tokenizer generation, and their 400s."""

from __future__ import annotations

import pytest

from tests.api.harness import MODEL, serve
from tests.api.test_images import data_url, picture, vision_dir
from tests.api.test_tools import TOOL_REQUEST, Script
from tests.spec import assert_error

KINDS = ("v3-spm", "v7-tekken", "v11-tekken", "v13-tekken")
TEXTS = ["Hello world, plain ASCII.", "Accentué: déjà vu, Ünïcödé, ñandú", "日本語のテキストと中文字符",
         "  leading spaces and a trailing one "]


def tokenize(client, body, **kw):
    r = client.post("/tokenize", json={"model": MODEL, **body}, **kw)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["count"] == len(out["tokens"]) and isinstance(out["max_model_len"], int)
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_text_round_trips(tokenizer_dirs, kind):
    s = Script(tokenizer_dirs, kind)
    with serve(s.dir, lambda p, sp, i: [2]) as (client, fake):
        for text in TEXTS:
            out = tokenize(client, {"prompt": text})
            assert out["tokens"] == s.inner.encode(text, bos=True, eos=False)
            assert out["max_model_len"] == 4096 and "token_strs" not in out
            bare = tokenize(client, {"prompt": text, "add_special_tokens": False})
            assert bare["tokens"] == out["tokens"][1:]
            back = client.post("/detokenize", json={"model": MODEL, "tokens": out["tokens"]})
            assert back.status_code == 200 and back.json() == {"prompt": text}
            # the count /tokenize gives is what /v1/completions reports for the same prompt
            usage = client.post("/v1/completions", json={"model": MODEL, "prompt": text}).json()["usage"]
            assert usage["prompt_tokens"] == out["count"]


def test_token_strs(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v11-tekken")
    with serve(s.dir, lambda p, sp, i: [2]) as (client, _):
        out = tokenize(client, {"prompt": "Hello world", "return_token_strs": True})
        chat = tokenize(client, {"messages": [{"role": "user", "content": "Hi"}],
                                 "return_token_strs": True})
    assert out["token_strs"][0] == "<s>" and "".join(out["token_strs"][1:]) == "Hello world"
    assert chat["token_strs"][:2] == ["<s>", "[INST]"] and chat["token_strs"][-1] == "[/INST]"


def _chat_usage(client, body) -> tuple[int, list[int]]:
    r = client.post("/v1/chat/completions", json={"model": MODEL, **body})
    assert r.status_code == 200, r.text
    return r.json()["usage"]["prompt_tokens"]


@pytest.mark.parametrize("kind", KINDS)
def test_messages_count_is_the_chat_requests_prompt_tokens(tokenizer_dirs, kind):
    s = Script(tokenizer_dirs, kind)
    plain = {"messages": [{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": "Hello there"},
                          {"role": "assistant", "content": "Hi!"},
                          {"role": "user", "content": "How are you?"}]}
    tools = {k: v for k, v in TOOL_REQUEST.items() if k != "model"}
    with serve(s.dir, lambda p, sp, i: [2]) as (client, fake):
        for body in (plain, tools, {**tools, "tool_choice": "none"}):
            out = tokenize(client, body)
            assert out["count"] == _chat_usage(client, body)
            assert out["tokens"] == fake.requests[-1][0]  # the very prompt the engine got
        assert tokenize(client, tools)["count"] > tokenize(client, {
            "messages": tools["messages"]})["count"]  # the tools are in the prompt


def test_messages_count_with_images(tmp_path):
    directory = vision_dir(tmp_path, "v11-tekken")
    body = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": data_url(picture(1))}},
        {"type": "image_url", "image_url": {"url": data_url(picture(2, (64, 20)))}}]}]}
    with serve(directory, lambda p, sp, i: [2]) as (client, fake):
        out = tokenize(client, body)
        assert out["count"] == _chat_usage(client, body) and out["tokens"] == fake.requests[-1][0]
        text_only = tokenize(client, {"messages": [{"role": "user", "content": "What is in these?"}]})
        bad = client.post("/tokenize", json={"messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]})
    assert out["tokens"].count(10) > 0 and out["count"] > text_only["count"] + 8  # [IMG] grids
    assert_error(bad, 400, param="messages[0].content[0]", code="invalid_image_format")


def test_messages_count_with_reasoning_settings(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v13-tekken")
    body = {"messages": [{"role": "user", "content": "Solve 2+2."}], "prompt_mode": "reasoning"}
    with serve(s.dir, lambda p, sp, i: [2], reasoning_system_prompt="Think step by step first.",
               capabilities={"reasoning": True}) as (client, fake):
        out = tokenize(client, body)
        assert out["count"] == _chat_usage(client, body) and out["tokens"] == fake.requests[-1][0]
        without = tokenize(client, {"messages": body["messages"]})
    assert out["count"] > without["count"]  # the reasoning system prompt is counted


def test_long_prompts_are_counted_not_refused(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v3-spm")
    with serve(s.dir, lambda p, sp, i: [2], max_model_len=32) as (client, _):
        text = tokenize(client, {"prompt": "word " * 40})
        chat = tokenize(client, {"messages": [{"role": "user", "content": "word " * 40}]})
        huge = client.post("/tokenize", json={"prompt": "x" * 1_000_000})
        completion = client.post("/v1/completions", json={"prompt": "word " * 40})
    assert text["count"] > 32 and chat["count"] > 32 and text["max_model_len"] == 32
    assert_error(huge, 400, param="prompt", code="context_length_exceeded")  # cannot fit at all
    assert_error(completion, 400, param="prompt", code="context_length_exceeded")


@pytest.fixture(scope="module")
def server(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v7-tekken")
    with serve(s.dir, lambda p, sp, i: [2], api_keys=["k"], max_model_len=64) as (client, _):
        yield client


AUTH = {"Authorization": "Bearer k"}
BAD = [
    ("/tokenize", {}, 400, "prompt", "missing_required_parameter"),
    ("/tokenize", {"prompt": "a", "messages": [{"role": "user", "content": "b"}]}, 400, "prompt", "invalid_value"),
    ("/tokenize", {"prompt": ["a"]}, 400, "prompt", "invalid_type"),
    ("/tokenize", {"prompt": "a", "model": "other"}, 404, "model", "model_not_found"),
    ("/tokenize", {"messages": [{"role": "robot", "content": "b"}]}, 400, "messages[0]", "invalid_value"),
    ("/tokenize", {"messages": []}, 400, "messages", "invalid_value"),
    ("/tokenize", {"prompt": "a", "add_special_tokens": "maybe"}, 400, "add_special_tokens", "invalid_type"),
    ("/detokenize", {}, 400, "tokens", "missing_required_parameter"),
    ("/detokenize", {"tokens": "1 2"}, 400, "tokens", "invalid_type"),
    ("/detokenize", {"tokens": [1, "2"]}, 400, "tokens[1]", "invalid_type"),
    ("/detokenize", {"tokens": [1, -1]}, 400, "tokens[1]", "invalid_value"),
    ("/detokenize", {"tokens": [1, 131072]}, 400, "tokens[1]", "invalid_value"),
    ("/detokenize", {"tokens": [1] * 65}, 400, "tokens", "invalid_value"),
    ("/detokenize", {"tokens": [1], "model": "other"}, 404, "model", "model_not_found"),
]


@pytest.mark.parametrize("path, body, status, param, code", BAD, ids=[f"{b[0]}-{b[1]}"[:50] for b in BAD])
def test_bad_requests(server, path, body, status, param, code):
    assert_error(server.post(path, json=body, headers=AUTH), status, param=param, code=code)


def test_guarded_by_api_keys(server):
    for path, body in (("/tokenize", {"prompt": "a"}), ("/detokenize", {"tokens": [1, 2]})):
        assert_error(server.post(path, json=body), 401, code="invalid_api_key")
        assert server.post(path, json=body, headers=AUTH).status_code == 200
    assert server.post("/detokenize", json={"tokens": []}, headers=AUTH).json() == {"prompt": ""}
