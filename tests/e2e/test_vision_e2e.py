"""Images end to end: the real server on vLLM's CPU engine with tiny random Pixtral-format models.

The weights are random, so "the image reached the model" is shown by greedy decoding: two
different images give different tokens or logprobs, the same image twice gives identical ones.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from jsonschema import validate

from server.tinymodel import write_tokenizer
from tests.api.harness import sse_events
from tests.api.test_images import data_url, http_host, picture, png_header
from tests.conftest import tokenizer_for
from tests.e2e.test_tools_e2e import script
from tests.spec import assert_error, assert_valid

pytestmark = pytest.mark.e2e

IMAGE_A, IMAGE_B = picture(11, (60, 40)), picture(12, (60, 40))


def model_id(server) -> str:
    return httpx.get(server.url + "/v1/models").json()["data"][0]["id"]


def post(server, body):
    return httpx.post(server.url + "/v1/chat/completions",
                      json={"model": model_id(server), **body}, timeout=180)


def image(url: str, shape: str = "openai") -> dict:
    if shape == "openai":
        return {"type": "image_url", "image_url": {"url": url}}
    if shape == "mistral":
        return {"type": "image_url", "image_url": url}
    return {"image_url": url}


def greedy(server, *parts, **extra) -> dict:
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Describe:"}, *parts]}],
            "temperature": 0, "max_tokens": 8, "logprobs": True, **extra}
    r = post(server, body)
    assert r.status_code == 200, r.text
    data = r.json()
    assert_valid("CreateChatCompletionResponse", data)
    return data


def trace(data: dict) -> list[tuple[str, float]]:
    return [(t["token"], round(t["logprob"], 4)) for t in data["choices"][0]["logprobs"]["content"]]


@pytest.fixture()
def image_host() -> Iterator[str]:
    """Loopback HTTP: /a.png (IMAGE_A), /moved (→ a private address), /slow (never answers)."""
    with http_host({"/a.png": ("ok", IMAGE_A, "image/png"),
                    "/moved": ("redirect", "http://192.168.1.10/a.png"), "/slow": ("stall",)}) as url:
        yield url


# -- images reach the model ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["v7_vision_server", "v11_vision_server", "v13_vision_server"])
def test_images_reach_the_model(request, name):
    server = request.getfixturevalue(name)
    a1, b, a2 = (greedy(server, image(data_url(x))) for x in (IMAGE_A, IMAGE_B, IMAGE_A))
    assert trace(a1) == trace(a2)
    assert trace(a1) != trace(b)
    text_only = greedy(server)
    # a 60x40 image: 4x3 grid of [IMG] (12) + 2 [IMG_BREAK] + 1 [IMG_END]
    assert a1["usage"]["prompt_tokens"] == text_only["usage"]["prompt_tokens"] + 15
    assert httpx.get(server.url + "/v1/models").json()["data"][0]["capabilities"]["vision"] is True


def test_every_shape_and_source_gives_the_same_answer(v11_vision_server, image_host):
    server = v11_vision_server
    reference = trace(greedy(server, image(data_url(IMAGE_A))))
    for part in (image(data_url(IMAGE_A), "mistral"), image(data_url(IMAGE_A), "shorthand"),
                 image(image_host + "/a.png"), image(image_host + "/a.png", "mistral"),
                 {"type": "image_url", "image_url": {"url": data_url(IMAGE_A), "detail": "low"}}):
        assert trace(greedy(server, part)) == reference, part


def test_several_images_in_any_order_and_across_messages(v11_vision_server):
    server = v11_vision_server
    a, b = image(data_url(IMAGE_A)), image(data_url(IMAGE_B))
    text = {"type": "text", "text": "and"}
    ab = trace(greedy(server, a, text, b))
    assert ab != trace(greedy(server, b, text, a))
    body = {"messages": [{"role": "user", "content": [a]}, {"role": "assistant", "content": "A cat."},
                         {"role": "user", "content": [text, b, image(data_url(picture(13, (20, 90))))]}],
            "temperature": 0, "max_tokens": 8}
    r = post(server, body)
    assert r.status_code == 200, r.text


def test_stream_equals_non_stream_with_images(v11_vision_server):
    server = v11_vision_server
    parts = [image(data_url(IMAGE_A)), image(data_url(IMAGE_B), "mistral")]
    plain = greedy(server, *parts, max_tokens=12, logprobs=False)
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Describe:"}, *parts]}],
            "temperature": 0, "max_tokens": 12, "stream": True,
            "stream_options": {"include_usage": True}}
    events = sse_events(post(server, body))
    assert events[-1] == "[DONE]"
    for e in events[:-1]:
        assert_valid("CreateChatCompletionStreamResponse", e)
    text = "".join(c["delta"].get("content") or "" for e in events[:-1] for c in e["choices"])
    assert text == plain["choices"][0]["message"]["content"]
    assert events[-2]["usage"] == plain["usage"]


# -- with tools, structured outputs and reasoning ---------------------------------------------------
TOOL = {"type": "function", "function": {"name": "describe_image", "description": "Describe.",
                                         "parameters": {"type": "object", "properties": {
                                             "colour": {"type": "string", "enum": ["red", "blue"]},
                                             "count": {"type": "integer"}},
                                             "required": ["colour", "count"],
                                             "additionalProperties": False}}}


@pytest.mark.parametrize("name", ["v7_vision_server", "v11_vision_server"])
def test_forced_tool_call_with_an_image(request, name):
    server = request.getfixturevalue(name)
    for stream in (False, True):
        body = {"messages": [{"role": "user", "content": [image(data_url(IMAGE_A)),
                                                          {"type": "text", "text": "What colour?"}]}],
                "tools": [TOOL], "tool_choice": "required", "parallel_tool_calls": False,
                "temperature": 1.0, "seed": 3,
                "max_tokens": 80, "stream": stream}
        r = post(server, body)
        assert r.status_code == 200, r.text
        if stream:
            args = "".join(d["function"].get("arguments", "") for e in sse_events(r)[:-1]
                           for c in e["choices"] for d in c["delta"].get("tool_calls") or [])
        else:
            (call,) = r.json()["choices"][0]["message"]["tool_calls"]
            assert call["function"]["name"] == "describe_image"
            args = call["function"]["arguments"]
        validate(json.loads(args), TOOL["function"]["parameters"])


def test_json_schema_with_an_image(v11_vision_server):
    schema = {"type": "object", "properties": {"colour": {"type": "string", "enum": ["red", "blue"]},
                                               "ok": {"type": "boolean"}},
              "required": ["colour", "ok"], "additionalProperties": False}
    body = {"messages": [{"role": "user", "content": [image(data_url(IMAGE_B))]}], "max_tokens": 40,
            "temperature": 1.0, "seed": 1,
            "response_format": {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}}
    r = post(v11_vision_server, body)
    assert r.status_code == 200, r.text
    validate(json.loads(r.json()["choices"][0]["message"]["content"]), schema)


def test_reasoning_with_an_image_v13(v13_vision_server, tmp_path):
    write_tokenizer("v13-tekken", tmp_path)
    tok = tokenizer_for(tmp_path).instruct_tokenizer.tokenizer
    ids = script(tok, "[THINK]", "A noisy picture.", "[/THINK]", "It is noise.")
    for stream in (False, True):
        body = {"messages": [{"role": "user", "content": [image(data_url(IMAGE_A)),
                                                          {"type": "text", "text": "What is it?"}]}],
                "max_tokens": 40, "vllm_xargs": {"script": ids}, "stream": stream}
        r = post(v13_vision_server, body)
        assert r.status_code == 200, r.text
        if stream:
            deltas = [c["delta"] for e in sse_events(r)[:-1] for c in e["choices"]]
            reasoning = "".join(d.get("reasoning") or "" for d in deltas)
            content = "".join(d.get("content") or "" for d in deltas)
        else:
            msg = r.json()["choices"][0]["message"]
            reasoning, content = msg["reasoning"], msg["content"]
        assert (reasoning, content) == ("A noisy picture.", "It is noise.")


# -- bad input: a 400 that names the part, and the server keeps serving -----------------------------
def test_bad_images_are_400s_and_the_server_keeps_serving(v11_vision_server, image_host):
    server = v11_vision_server
    part = "messages[0].content[1]"
    cases = [
        (data_url(IMAGE_A[:200]), part, "invalid_image"),
        (data_url(picture(14, (64, 64), "JPEG")[:400], "image/jpeg"), part, "invalid_image"),
        (data_url(b"GIF89a not really"), part, "invalid_image_format"),
        (data_url(b"\x00" * 64), part, "invalid_image_format"),
        (data_url(png_header(60_000, 60_000)), part, "image_too_large"),
        ("", part + ".image_url.url", "invalid_image_url"),
        ("file:///etc/passwd", part + ".image_url.url", "invalid_image_url"),
        ("gopher://127.0.0.1/", part + ".image_url.url", "invalid_image_url"),
        ("http://10.1.2.3/a.png", part + ".image_url.url", "image_url_not_allowed"),
        ("https://example.com/a.png", part + ".image_url.url", "image_url_not_allowed"),
        (image_host + "/moved", part + ".image_url.url", "image_url_not_allowed"),
        (image_host + "/missing.png", part, "image_fetch_failed"),
        (image_host + "/slow", part, "image_fetch_timeout"),
    ]
    for url, param, code in cases:
        for stream in (False, True):
            body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "x"}, image(url)]}],
                    "max_tokens": 4, "stream": stream}
            assert_error(post(server, body), 400, param, code)
    too_many = [image(data_url(IMAGE_A))] * 5
    assert_error(post(server, {"messages": [{"role": "user", "content": too_many}]}), 400,
                 "messages[0].content[4]", "too_many_images")
    in_system = {"messages": [{"role": "system", "content": [image(data_url(IMAGE_A))]},
                              {"role": "user", "content": "hi"}]}
    assert_error(post(server, in_system), 400, "messages[0].content[0]", "invalid_value")
    # nothing broke: the same greedy request still gives the same answer
    assert trace(greedy(server, image(data_url(IMAGE_A)))) == trace(greedy(server, image(data_url(IMAGE_A))))
    assert httpx.get(server.url + "/ready").status_code == 200


def test_text_only_model_refuses_images(tiny_server):
    body = {"messages": [{"role": "user", "content": [image(data_url(IMAGE_A))]}], "max_tokens": 4}
    err = assert_error(post(tiny_server, body), 400, "messages[0].content[0]", "image_input_not_supported")
    assert "does not accept images" in err["message"]
    assert httpx.get(tiny_server.url + "/v1/models").json()["data"][0]["capabilities"]["vision"] is False
