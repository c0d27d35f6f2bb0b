"""``/v1/completions``, ``/tokenize`` and ``/detokenize`` on the real vLLM CPU engine: the
OpenAI SDK, LangChain's ``OpenAI`` LLM and ``vllm bench serve`` (the installed vLLM's own load
generator, OpenAI backend) against our server; token counts against the engine's own counters.

Exact texts come from token scripts the real engine emits (tests/e2e/scripted.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap

import httpx
import pytest
from openai import OpenAI

from server.tinymodel import FORMAT
from tests.api.test_images import data_url, picture
from tests.e2e.conftest import CACHE, MODEL, ROOT
from tests.e2e.test_tools_e2e import FORECAST, model_id, script, tokenizers  # noqa: F401 (fixture)
from tests.spec import assert_error, assert_valid_completion

pytestmark = pytest.mark.e2e

PROMPT = "The capital of France is"


def client(server) -> OpenAI:
    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=180)


def completion(server, **body) -> dict:
    r = httpx.post(server.url + "/v1/completions", json={"model": model_id(server), **body},
                   timeout=180)
    assert r.status_code == 200, r.text
    data = r.json()
    assert_valid_completion(data)
    return data


def engine_tokens(server) -> tuple[float, float]:
    """vLLM's own counters: prompt tokens processed and tokens generated."""
    text = httpx.get(server.url + "/metrics", timeout=30).text

    def total(name: str) -> float:
        return sum(float(m) for m in re.findall(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+]+)$", text, re.M))

    return total("vllm:prompt_tokens_total"), total("vllm:generation_tokens_total")


# -- the OpenAI SDK ---------------------------------------------------------------------------

def test_openai_sdk_plain_stream_and_token_prompts(tiny_server, tokenizers):
    tok = tokenizers("v3-spm")
    answer = script(tok, " Paris, of course.")
    sdk = client(tiny_server)
    plain = sdk.completions.create(model=MODEL, prompt=PROMPT, max_tokens=32,
                                   extra_body={"vllm_xargs": {"script": answer}})
    assert plain.object == "text_completion" and plain.choices[0].finish_reason == "stop"
    text = plain.choices[0].text
    assert text.strip() == "Paris, of course."  # the continuation keeps its leading space
    assert text == tok.decode(tok.encode("☺", bos=False, eos=False) + answer)[1:]
    prompt_ids = tok.encode(PROMPT, bos=True, eos=False)
    assert plain.usage.prompt_tokens == len(prompt_ids)
    assert plain.usage.completion_tokens == len(answer) + 1  # + EOS

    pieces, usage = [], None
    for chunk in sdk.completions.create(model=MODEL, prompt=PROMPT, max_tokens=32, stream=True,
                                        stream_options={"include_usage": True},
                                        extra_body={"vllm_xargs": {"script": answer}}):
        assert_valid_completion(chunk.model_dump(exclude_unset=True), chunk=True)
        pieces += [c.text for c in chunk.choices]
        usage = chunk.usage or usage
    assert "".join(pieces) == text and usage == plain.usage

    by_ids = sdk.completions.create(model=MODEL, prompt=prompt_ids, max_tokens=32,
                                    extra_body={"vllm_xargs": {"script": answer}})
    assert by_ids.choices[0].text == text and by_ids.usage == plain.usage
    batch = sdk.completions.create(model=MODEL, prompt=[prompt_ids, prompt_ids[:3]], n=2,
                                   max_tokens=4, temperature=1.0, seed=5)
    assert [c.index for c in batch.choices] == [0, 1, 2, 3]
    assert batch.usage.prompt_tokens == len(prompt_ids) + 3
    assert batch.usage.completion_tokens == 16


def test_openai_sdk_echo_and_logprobs(tiny_server):
    sdk = client(tiny_server)
    out = sdk.completions.create(model=MODEL, prompt=PROMPT, max_tokens=6, echo=True, logprobs=2,
                                 temperature=0, extra_body={"ignore_eos": True})
    assert_valid_completion(out.model_dump(exclude_unset=True))
    choice = out.choices[0]
    lp = choice.logprobs
    prompt_len = out.usage.prompt_tokens
    assert choice.text.startswith(PROMPT) and out.usage.completion_tokens == 6
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset) == prompt_len + 6
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None  # BOS has no context
    for value, top, token in zip(lp.token_logprobs[1:], lp.top_logprobs[1:], lp.tokens[1:]):
        assert value <= 0 and 1 <= len(top) <= 3 and top[token] == value
    assert lp.text_offset[prompt_len] == len(PROMPT)
    # greedy: each generated token is the best of its top list
    for top, token in zip(lp.top_logprobs[prompt_len:], lp.tokens[prompt_len:]):
        assert top[token] == max(top.values())
    # echo with max_tokens 0: the prompt's logprobs only, the same as above
    only = sdk.completions.create(model=MODEL, prompt=PROMPT, max_tokens=0, echo=True, logprobs=2)
    assert only.choices[0].text == PROMPT and only.usage.completion_tokens == 0
    assert only.choices[0].logprobs.tokens == lp.tokens[:prompt_len]
    assert only.choices[0].logprobs.token_logprobs[1:] == pytest.approx(
        lp.token_logprobs[1:prompt_len], abs=1e-3)
    # every choice of n > 1 (vLLM runs one child request each) gets the prompt's logprobs
    two = sdk.completions.create(model=MODEL, prompt=PROMPT, max_tokens=3, echo=True, logprobs=1,
                                 n=2, temperature=1.0, seed=9)
    for c in two.choices:
        assert c.logprobs.token_logprobs[1:prompt_len] == pytest.approx(
            lp.token_logprobs[1:prompt_len], abs=1e-3)
    # the same prompt logprobs through a stream
    chunks = [c for c in sdk.completions.create(model=MODEL, prompt=PROMPT, max_tokens=6,
                                                 echo=True, logprobs=2, temperature=0,
                                                 stream=True, extra_body={"ignore_eos": True})]
    streamed = [t for c in chunks for ch in c.choices if ch.logprobs for t in ch.logprobs.tokens]
    assert streamed == lp.tokens
    assert "".join(ch.text for c in chunks for ch in c.choices) == choice.text


def test_stop_strings_fim_and_errors(tiny_server, tokenizers):
    tok = tokenizers("v3-spm")
    answer = script(tok, " one, two. three")
    cut = completion(tiny_server, prompt=PROMPT, stop=["."], max_tokens=32,
                     vllm_xargs={"script": answer})
    assert cut["choices"][0]["text"].strip() == "one, two" and cut["choices"][0]["finish_reason"] == "stop"
    fim = completion(tiny_server, prompt="def add(a, b):\n", suffix="\nprint(add(1, 2))\n",
                     max_tokens=8, temperature=0)
    assert fim["usage"]["completion_tokens"] >= 1
    url = tiny_server.url + "/v1/completions"
    assert_error(httpx.post(url, json={"prompt": [1, 10**7]}, timeout=60), 400, param="prompt[1]")
    assert_error(httpx.post(url, json={"prompt": "hello " * 40000}, timeout=60), 400,
                 param="prompt", code="context_length_exceeded")
    assert_error(httpx.post(url, json={"prompt": "a", "model": "gpt-3.5-turbo-instruct"},
                            timeout=60), 404, code="model_not_found")
    assert completion(tiny_server, prompt="still fine", max_tokens=2)["choices"]


# -- LangChain ---------------------------------------------------------------------------------

def test_langchain_openai_llm(tiny_server, tokenizers):
    from langchain_openai import OpenAI as LangChainOpenAI

    tok = tokenizers("v3-spm")
    answer = script(tok, " Paris.")
    llm = LangChainOpenAI(model=MODEL, base_url=tiny_server.url + "/v1", api_key="unused",
                          max_tokens=16, max_retries=0,
                          extra_body={"vllm_xargs": {"script": answer}})
    assert llm.invoke(PROMPT).strip() == "Paris."
    assert [t.strip() for t in llm.batch([PROMPT, "Another prompt"])] == ["Paris.", "Paris."]
    assert "".join(llm.stream(PROMPT)).strip() == "Paris."
    result = llm.generate([PROMPT, "A third one"])
    assert result.llm_output["token_usage"]["completion_tokens"] == 2 * (len(answer) + 1)


# -- vllm bench serve --------------------------------------------------------------------------

BENCH = textwrap.dedent("""
    import sys
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    main(parser.parse_args(sys.argv[1:]))
""")


def test_vllm_bench_serve_completions(tiny_server, tmp_path):
    """vLLM's own benchmark client, OpenAI backend on /v1/completions with its random dataset
    (which also checks its prompts against our /tokenize and /detokenize): every request
    succeeds, every one generates exactly the requested tokens, and the totals we report are
    what the engine itself counted."""
    prompts, out_len = 24, 12
    before = engine_tokens(tiny_server)
    args = ["--backend", "openai", "--endpoint", "/v1/completions", "--base-url", tiny_server.url,
            "--model", MODEL, "--tokenizer", str(CACHE / f"tiny-v3-spm-f{FORMAT}"),
            "--tokenizer-mode", "mistral", "--dataset-name", "random", "--random-input-len", "48",
            "--random-output-len", str(out_len), "--num-prompts", str(prompts),
            "--max-concurrency", "8", "--seed", "3", "--save-result", "--save-detailed",
            "--result-dir", str(tmp_path), "--result-filename", "bench.json", "--disable-tqdm",
            "--ready-check-timeout-sec", "0"]  # no extra test request: the counts are exact
    run = subprocess.run([sys.executable, "-c", BENCH, *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((tmp_path / "bench.json").read_text())
    after = engine_tokens(tiny_server)
    assert result["completed"] == prompts and result.get("failed", 0) == 0, result.get("errors")
    assert result["output_lens"] == [out_len] * prompts  # ignore_eos: exactly what was asked
    assert result["total_output_tokens"] == prompts * out_len
    assert all(40 <= n <= 56 for n in result["input_lens"])  # ours, from usage.prompt_tokens
    # what we reported is what vLLM's engine processed and generated
    assert after[0] - before[0] == sum(result["input_lens"])
    assert after[1] - before[1] == result["total_output_tokens"]


# -- /tokenize and /detokenize ------------------------------------------------------------------

def _count(server, body) -> int:
    r = httpx.post(server.url + "/tokenize", json={"model": model_id(server), **body}, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()["count"]


def _chat_prompt_tokens(server, body) -> int:
    r = httpx.post(server.url + "/v1/chat/completions", timeout=180,
                   json={"model": model_id(server), "max_tokens": 1, **body})
    assert r.status_code == 200, r.text
    return r.json()["usage"]["prompt_tokens"]


def test_tokenize_counts_what_chat_counts(tiny_server, v11_server, v13_server):
    plain = {"messages": [{"role": "system", "content": "Be brief."},
                          {"role": "user", "content": "What is Mistral?"}]}
    tools = {"messages": [{"role": "user", "content": "Forecast for Paris?"}], "tools": [FORECAST]}
    reasoning = {"messages": [
        {"role": "user", "content": "Is 9.11 bigger than 9.8?"},
        {"role": "assistant", "content": "No.", "reasoning": "Compare tenths: 1 < 8."},
        {"role": "user", "content": "And 9.9?"}], "tools": [FORECAST], "tool_choice": "none"}
    for server, bodies in ((tiny_server, [plain, tools]), (v11_server, [plain, tools]),
                           (v13_server, [plain, tools, reasoning])):
        for body in bodies:
            assert _count(server, body) == _chat_prompt_tokens(server, body)
        assert _count(server, {"prompt": "What is Mistral?"}) == completion(
            server, prompt="What is Mistral?", max_tokens=1)["usage"]["prompt_tokens"]


def test_tokenize_counts_images(v11_vision_server):
    body = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "Describe both."},
        {"type": "image_url", "image_url": {"url": data_url(picture(3, (60, 40)))}},
        {"type": "image_url", "image_url": {"url": data_url(picture(4, (30, 64)))}}]}]}
    count = _count(v11_vision_server, body)
    assert count == _chat_prompt_tokens(v11_vision_server, body)
    assert count > _count(v11_vision_server, {"messages": [{"role": "user", "content": "Describe both."}]}) + 8


@pytest.mark.parametrize("server_name", ["tiny_server", "v11_server"])
def test_detokenize_round_trips(request, server_name):
    server = request.getfixturevalue(server_name)
    for text in ("Plain ASCII text.", "Accentué : déjà vu, ñandú, Ünïcödé", "日本語と中文のテキスト"):
        r = httpx.post(server.url + "/tokenize", json={"prompt": text, "return_token_strs": True},
                       timeout=60)
        tokens = r.json()["tokens"]
        assert len(r.json()["token_strs"]) == len(tokens)
        back = httpx.post(server.url + "/detokenize", json={"tokens": tokens}, timeout=60)
        assert back.json() == {"prompt": text}
    assert_error(httpx.post(server.url + "/detokenize", json={"tokens": [1, 10**9]}, timeout=60),
                 400, param="tokens[1]")
