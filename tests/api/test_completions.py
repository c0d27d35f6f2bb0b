"""``POST /v1/completions`` through the real app over the scripted engine: every field, every
error, each answer and chunk checked against OpenAI's completions schema, on v3, v7, v11 and
v13 tokenizers."""

from __future__ import annotations

import pytest
from mistral_common.protocol.fim.request import FIMRequest

from parsers.vocab import Vocab
from tests.api.harness import MODEL, serve, sse_events
from tests.api.test_tools import Script
from tests.spec import assert_error, assert_valid_completion

KINDS = ("v3-spm", "v7-tekken", "v11-tekken", "v13-tekken")
PROMPT = "The capital of France is"


@pytest.fixture(params=KINDS)
def s(request, tokenizer_dirs) -> Script:
    return Script(tokenizer_dirs, request.param)


def cont(s: Script, text: str, eos: bool = True) -> list[int]:
    """What a model continuing a text writes: ``text`` with no SentencePiece dummy space."""
    if s.dir.name.endswith("spm"):
        ids = s.inner.encode("☺" + text, bos=False, eos=False)[2:]  # "▁", "☺"
    else:
        ids = s.inner.encode(text, bos=False, eos=False)  # Tekken has no dummy space
    assert cont_text(s, ids) == text
    return ids + ([s.inner.eos_id] if eos else [])


def cont_text(s: Script, ids: list[int]) -> str:
    """The text of ``ids`` continuing a prompt."""
    return s.inner.decode(s.inner.encode("☺", bos=False, eos=False) + ids)[len("☺"):]


def post(client, body, **kw):
    return client.post("/v1/completions", json={"model": MODEL, **body}, **kw)


def ok(r) -> dict:
    assert r.status_code == 200, r.text
    body = r.json()
    assert_valid_completion(body)
    assert body["object"] == "text_completion" and body["id"].startswith("cmpl-")
    assert body["model"] == MODEL
    return body


def chunks_of(r) -> list[dict]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r)
    assert events[-1] == "[DONE]" and "[DONE]" not in events[:-1]
    for c in events[:-1]:
        assert_valid_completion(c, chunk=True)
        assert c["object"] == "text_completion" and c["id"] == events[0]["id"]
    return events[:-1]


def joined(chunks: list[dict], index: int = 0) -> tuple[str, list[str | None]]:
    mine = [ch for c in chunks for ch in c["choices"] if ch["index"] == index]
    return "".join(ch["text"] for ch in mine), [ch["finish_reason"] for ch in mine if ch["finish_reason"]]


# -- the plain path ------------------------------------------------------------------------

def test_raw_prompt_with_bos_and_no_template(s):
    answer = " Paris. [TOOL_CALLS] is plain text here"
    tokens = cont(s, answer)
    with serve(s.dir, lambda p, sp, i: tokens) as (client, fake):
        body = ok(post(client, {"prompt": PROMPT, "max_tokens": 64}))
    prompt_ids = s.inner.encode(PROMPT, bos=True, eos=False)
    assert fake.requests[0][0] == prompt_ids  # BOS + the text: no [INST], no chat template
    assert body["choices"] == [{"index": 0, "text": answer, "logprobs": None, "finish_reason": "stop"}]
    assert body["usage"] == {"prompt_tokens": len(prompt_ids), "completion_tokens": len(tokens),
                             "total_tokens": len(prompt_ids) + len(tokens)}
    assert fake.requests[0][1].max_tokens == 64


def test_control_tokens_are_not_parsed(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v13-tekken")
    tokens = s.ids("[THINK]", "hmm", "[/THINK]", " ok", "[TOOL_CALLS]", "get_weather", "[ARGS]", "{}")
    with serve(s.dir, lambda p, sp, i: tokens) as (client, _):
        plain = ok(post(client, {"prompt": PROMPT}))["choices"][0]
        shown = ok(post(client, {"prompt": PROMPT, "skip_special_tokens": False}))["choices"][0]
    assert plain["text"] == "hmm okget_weather{}"  # what the model wrote; control tokens skipped
    assert shown["text"] == "[THINK]hmm[/THINK] ok[TOOL_CALLS]get_weather[ARGS]{}"
    assert "reasoning" not in plain and plain["finish_reason"] == "stop"


def test_stream_equals_non_stream_with_usage_last(s):
    tokens = cont(s, " Paris, a city of ünïcödé ✓ and 日本語.")
    with serve(s.dir, lambda p, sp, i: tokens) as (client, _):
        plain = ok(post(client, {"prompt": PROMPT, "max_tokens": 64}))
        chunks = chunks_of(post(client, {"prompt": PROMPT, "max_tokens": 64, "stream": True,
                                         "stream_options": {"include_usage": True}}))
        bare = chunks_of(post(client, {"prompt": PROMPT, "max_tokens": 64, "stream": True}))
    text, finishes = joined(chunks[:-1])
    assert text == plain["choices"][0]["text"] and finishes == ["stop"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == plain["usage"]
    assert all("usage" not in c for c in chunks[:-1])
    assert all("usage" not in c and c["choices"] for c in bare)
    assert joined(bare) == (text, ["stop"])


def test_default_max_tokens_is_16_and_length_finish(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v3-spm")
    tokens = cont(s, " word" * 40)
    with serve(s.dir, lambda p, sp, i: tokens) as (client, fake):
        body = ok(post(client, {"prompt": PROMPT}))
    assert fake.requests[0][1].max_tokens == 16
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 16


# -- prompt shapes, n, indexes ---------------------------------------------------------------

def test_every_prompt_shape_and_choice_indexes(s):
    answers = {}

    def script(prompt, sampling, i):
        text = f" answer {len(prompt)}-{i}"
        answers[(len(prompt), i)] = text
        return cont(s, text)

    a, b = "First prompt", "The second, longer prompt"
    ids_a, ids_b = (s.inner.encode(t, bos=True, eos=False) for t in (a, b))
    with serve(s.dir, script) as (client, fake):
        strings = ok(post(client, {"prompt": [a, b], "n": 2, "temperature": 0.8}))
        one_ids = ok(post(client, {"prompt": ids_a}))
        many_ids = ok(post(client, {"prompt": [ids_a, ids_b], "n": 2}))
        stream = chunks_of(post(client, {"prompt": [a, b], "n": 2, "stream": True,
                                         "stream_options": {"include_usage": True}}))
        sent = [r[0] for r in fake.requests]
    assert sent[:2] == [ids_a, ids_b] and sent[2] == ids_a and sent[3:5] == [ids_a, ids_b]
    for body in (strings, many_ids):
        assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]  # prompt × n + j
        assert [c["text"] for c in body["choices"]] == [
            answers[(len(ids_a), 0)], answers[(len(ids_a), 1)],
            answers[(len(ids_b), 0)], answers[(len(ids_b), 1)]]
        assert body["usage"]["prompt_tokens"] == len(ids_a) + len(ids_b)  # each prompt once
    assert one_ids["choices"][0]["text"] == answers[(len(ids_a), 0)]
    for index in range(4):
        assert joined(stream[:-1], index) == (strings["choices"][index]["text"], ["stop"])
    assert stream[-1]["usage"] == strings["usage"]


def test_greedy_n_is_one_engine_sequence_copied(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v11-tekken")
    with serve(s.dir, lambda p, sp, i: cont(s, " same")) as (client, fake):
        body = ok(post(client, {"prompt": PROMPT, "n": 3, "temperature": 0}))
    assert fake.requests[0][1].n == 1
    assert [c["text"] for c in body["choices"]] == [" same"] * 3
    assert body["usage"]["completion_tokens"] == 3 * len(cont(s, " same"))


# -- sampling fields -------------------------------------------------------------------------

def test_sampling_fields_reach_the_engine(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v7-tekken")
    body = {"prompt": PROMPT, "max_tokens": 33, "temperature": 0.3, "top_p": 0.8, "seed": 11,
            "presence_penalty": 0.5, "frequency_penalty": -0.5, "logit_bias": {"1000": 5},
            "top_k": 7, "min_p": 0.1, "repetition_penalty": 1.2, "ignore_eos": True,
            "min_tokens": 2, "stop_token_ids": [1001], "vllm_xargs": {"k": "v"}, "user": "u-1",
            "best_of": 1}
    with serve(s.dir, lambda p, sp, i: cont(s, " x")) as (client, fake):
        ok(post(client, body))
    spec = fake.requests[0][1]
    assert (spec.max_tokens, spec.temperature, spec.top_p, spec.seed) == (33, 0.3, 0.8, 11)
    assert (spec.presence_penalty, spec.frequency_penalty, spec.logit_bias) == (0.5, -0.5, {1000: 5.0})
    assert (spec.top_k, spec.min_p, spec.repetition_penalty) == (7, 0.1, 1.2)
    assert (spec.ignore_eos, spec.min_tokens, spec.stop_token_ids) == (True, 2, [1001])
    assert spec.extra_args == {"k": "v"} and spec.logprobs is None and spec.prompt_logprobs is None


def test_preset_sampling_defaults_apply(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v3-spm")
    with serve(s.dir, lambda p, sp, i: cont(s, " x"),
               default_sampling={"temperature": 0.15, "top_p": 0.95}) as (client, fake):
        ok(post(client, {"prompt": PROMPT}))
        ok(post(client, {"prompt": PROMPT, "temperature": 1.0}))
    assert (fake.requests[0][1].temperature, fake.requests[0][1].top_p) == (0.15, 0.95)
    assert fake.requests[1][1].temperature == 1.0


def test_stop_strings_and_stop_tokens(s):
    text = " one, two. three; four"
    tokens = cont(s, text)
    stop_id = tokens[-2]  # an ordinary token used as a stop token id ends the output
    with serve(s.dir, lambda p, sp, i: tokens) as (client, fake):
        cut = ok(post(client, {"prompt": PROMPT, "stop": [".", ";"], "max_tokens": 64}))
        kept = ok(post(client, {"prompt": PROMPT, "stop": ".", "include_stop_str_in_output": True,
                                "max_tokens": 64}))
        stream = chunks_of(post(client, {"prompt": PROMPT, "stop": ["two"], "stream": True,
                                         "max_tokens": 64}))
    assert cut["choices"][0]["text"] == " one, two" and cut["choices"][0]["finish_reason"] == "stop"
    assert kept["choices"][0]["text"] == " one, two."
    assert joined(stream) == (" one, ", ["stop"])
    assert len(set(fake.aborted)) == 3  # the engine stops generating once a stop string is found

    ended = tokens[:-1]  # the script ends on the stop token (the engine stops there)
    with serve(s.dir, lambda p, sp, i: ended) as (client, fake):
        hidden = ok(post(client, {"prompt": PROMPT, "stop_token_ids": [stop_id], "max_tokens": 64}))
        shown = ok(post(client, {"prompt": PROMPT, "stop_token_ids": [stop_id], "max_tokens": 64,
                                 "include_stop_str_in_output": True}))
    assert hidden["choices"][0]["finish_reason"] == "stop"
    assert hidden["choices"][0]["text"] == cont_text(s, ended[:-1])  # the stop token not shown
    assert shown["choices"][0]["text"] == cont_text(s, ended)
    assert hidden["usage"]["completion_tokens"] == len(ended)


# -- logprobs and echo -----------------------------------------------------------------------

def _check_offsets(choice: dict) -> None:
    """Each token's text is in the choice's text at its offset (control tokens and partial
    characters aside; SentencePiece's first prompt piece lost its space in the echo)."""
    lp, text = choice["logprobs"], choice["text"]
    offsets = lp["text_offset"]
    assert offsets == sorted(offsets) and all(0 <= o <= len(text) for o in offsets)
    checked = 0
    for token, start in zip(lp["tokens"], offsets):
        if "\ufffd" in token or (token.startswith(("<", "[")) and token.endswith((">", "]"))):
            continue
        found = text[start:start + len(token)]
        assert found == token or (start == 0 and token[1:] == found[:-1]), (token, found, start)
        checked += 1
    assert checked >= len(offsets) // 2

def test_logprobs_legacy_arrays(s):
    text = " Paris, ünïcödé"
    tokens = cont(s, text)
    with serve(s.dir, lambda p, sp, i: tokens) as (client, fake):
        body = ok(post(client, {"prompt": PROMPT, "logprobs": 3, "max_tokens": 64}))
        stream = chunks_of(post(client, {"prompt": PROMPT, "logprobs": 3, "stream": True,
                                         "max_tokens": 64}))
        zero = ok(post(client, {"prompt": PROMPT, "logprobs": 0, "max_tokens": 64}))
    assert fake.requests[0][1].logprobs == 3 and fake.requests[0][1].prompt_logprobs is None
    choice = body["choices"][0]
    lp = choice["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(tokens)
    vocab = Vocab.from_tokenizer(s.tok)
    assert lp["tokens"] == [vocab.token_text(t) for t in tokens]
    assert all(isinstance(v, float) for v in lp["token_logprobs"])
    for top, token, logprob in zip(lp["top_logprobs"], lp["tokens"], lp["token_logprobs"]):
        assert 1 <= len(top) <= 4 and top[token] == logprob  # up to logprobs + 1, chosen included
    _check_offsets(choice)
    streamed = {k: [v for c in stream for ch in c["choices"] if ch["logprobs"]
                    for v in ch["logprobs"][k]] for k in lp}
    assert streamed == lp
    assert all(len(top) == 1 for top in zero["choices"][0]["logprobs"]["top_logprobs"])


def test_echo_with_and_without_logprobs(s):
    tokens = cont(s, " Paris.")
    prompt_ids = s.inner.encode(PROMPT, bos=True, eos=False)
    with serve(s.dir, lambda p, sp, i: tokens) as (client, fake):
        plain = ok(post(client, {"prompt": PROMPT, "echo": True}))
        scored = ok(post(client, {"prompt": PROMPT, "echo": True, "logprobs": 1}))
        stream = chunks_of(post(client, {"prompt": PROMPT, "echo": True, "logprobs": 1,
                                         "stream": True}))
        only = ok(post(client, {"prompt": PROMPT, "echo": True, "logprobs": 1, "max_tokens": 0}))
        ids_echo = ok(post(client, {"prompt": prompt_ids, "echo": True}))
    assert plain["choices"][0]["text"] == PROMPT + " Paris."
    assert ids_echo["choices"][0]["text"] == PROMPT + " Paris."  # token prompts echo as text
    assert fake.requests[1][1].prompt_logprobs == 1
    lp = scored["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(prompt_ids) + len(tokens)
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None  # BOS: no context
    assert all(isinstance(v, float) for v in lp["token_logprobs"][1:])
    _check_offsets(scored["choices"][0])
    assert lp["text_offset"][len(prompt_ids)] == len(PROMPT)  # the completion starts after the echo
    text, finishes = joined(stream)
    assert text == scored["choices"][0]["text"] and finishes == ["stop"]
    assert stream[0]["choices"][0]["text"].startswith(PROMPT)
    # max_tokens 0 with echo: the prompt and its logprobs only (lm-eval's loglikelihood)
    assert only["choices"][0]["text"] == PROMPT
    assert only["choices"][0]["logprobs"]["tokens"] == lp["tokens"][:len(prompt_ids)]
    assert only["choices"][0]["finish_reason"] == "length"
    assert only["usage"]["completion_tokens"] == 0
    assert fake.requests[3][1].max_tokens == 1


# -- constraints and FIM ---------------------------------------------------------------------

def test_structured_outputs_and_response_format(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v11-tekken")
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    with serve(s.dir, lambda p, sp, i: cont(s, '{"a":1}')) as (client, fake):
        ok(post(client, {"prompt": PROMPT, "structured_outputs": {"regex": "[a-z]+"}}))
        ok(post(client, {"prompt": PROMPT, "response_format": {
            "type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}))
        ok(post(client, {"prompt": PROMPT, "guided_choice": ["yes", "no"]}))
        bad = post(client, {"prompt": PROMPT, "structured_outputs": {"json": {"type": "nope"}}})
        two = post(client, {"prompt": PROMPT, "structured_outputs": {"regex": "a"},
                            "response_format": {"type": "json_object"}})
    kinds = [r[1].constraint.kind for r in fake.requests]
    assert kinds == ["regex", "json", "choice"]
    assert fake.requests[1][1].constraint.value["additionalProperties"] is False  # generated closed
    assert_error(bad, 400, param="structured_outputs.json")
    assert_error(two, 400, param="structured_outputs")


def test_fim_suffix(s):
    tokens = cont(s, "    return a + b\n")
    with serve(s.dir, lambda p, sp, i: tokens) as (client, fake):
        body = ok(post(client, {"prompt": "def add(a, b):\n", "suffix": "\nprint(add(1, 2))"}))
        models = client.get("/v1/models").json()
    expected = s.tok.encode_fim(FIMRequest(prompt="def add(a, b):\n", suffix="\nprint(add(1, 2))"))
    assert fake.requests[0][0] == expected.tokens
    assert body["choices"][0]["text"] == "    return a + b\n"
    assert models["data"][0]["capabilities"]["completion_fim"] is True


def test_fim_refused_where_the_tokenizer_has_none(tmp_path):
    import shutil

    import mistral_common

    from pathlib import Path

    src = Path(mistral_common.__file__).parent / "data" / "tokenizer.model.v1"
    shutil.copyfile(src, tmp_path / "tokenizer.model.v1")
    with serve(tmp_path, lambda p, sp, i: [2]) as (client, _):
        r = post(client, {"prompt": "def f():", "suffix": "return 1"})
        plain = post(client, {"prompt": "def f():"})
        card = client.get("/v1/models").json()["data"][0]
    err = assert_error(r, 400, param="suffix", code="unsupported_parameter")
    assert "fill-in-the-middle" in err["message"]
    assert plain.status_code == 200 and card["capabilities"]["completion_fim"] is False


# -- errors ----------------------------------------------------------------------------------

BAD = [
    ({"prompt": None}, "prompt", "missing_required_parameter"),
    ({"prompt": ""}, "prompt", "invalid_value"),
    ({"prompt": []}, "prompt", "invalid_value"),
    ({"prompt": [[]]}, "prompt[0]", "invalid_value"),
    ({"prompt": ["a", ""]}, "prompt[1]", "invalid_value"),
    ({"prompt": 5}, "prompt", "invalid_type"),
    ({"prompt": {"text": "a"}}, "prompt", "invalid_type"),
    ({"prompt": [1, "a"]}, "prompt[1]", "invalid_type"),
    ({"prompt": [1, True]}, "prompt[1]", "invalid_type"),
    ({"prompt": ["a", [1]]}, "prompt[1]", "invalid_type"),
    ({"prompt": [[1], [2, 2.5]]}, "prompt[1][1]", "invalid_type"),
    ({"prompt": [1, -3]}, "prompt[1]", "invalid_value"),
    ({"prompt": [1, 10**9]}, "prompt[1]", "invalid_value"),
    ({"prompt": [[1], [1, 2**40]]}, "prompt[1][1]", "invalid_value"),
    ({"prompt": [[1], [1, 2**70]]}, "prompt[1][1]", None),
    ({"prompt": [1, 10]}, "prompt", "invalid_value"),  # an [IMG] token without an image
    ({"max_tokens": 0}, "max_tokens", "invalid_value"),
    ({"max_tokens": -1}, "max_tokens", "invalid_value"),
    ({"max_tokens": "many"}, "max_tokens", "invalid_type"),
    ({"max_tokens": 5000}, "max_tokens", "invalid_value"),
    ({"max_tokens": 4091}, "max_tokens", "context_length_exceeded"),  # 6 prompt tokens
    ({"temperature": 3}, "temperature", "invalid_value"),
    ({"top_p": 0}, "top_p", "invalid_value"),
    ({"n": 0}, "n", "invalid_value"),
    ({"n": 17}, "n", "invalid_value"),
    ({"best_of": 3}, "best_of", "unsupported_parameter"),
    ({"best_of": 2, "n": 3}, "best_of", "unsupported_parameter"),
    ({"logprobs": 21}, "logprobs", "invalid_value"),
    ({"logprobs": 6}, "logprobs", "invalid_value"),  # this server's max_logprobs is 5 here
    ({"logprobs": -1}, "logprobs", "invalid_value"),
    ({"stream_options": {"include_usage": True}}, "stream_options", None),
    ({"echo": True, "suffix": "x"}, "echo", None),
    ({"stop": ["a", ""]}, "stop", None),
    ({"stop": 3}, "stop", "invalid_type"),
    ({"stop_token_ids": [10**9]}, "stop_token_ids", None),
    ({"logit_bias": {"abc": 1}}, "logit_bias", None),
    ({"logit_bias": {"99999999": 1}}, "logit_bias", None),
    ({"min_tokens": 20, "max_tokens": 10}, "min_tokens", None),
    ({"use_beam_search": True}, "use_beam_search", "unsupported_parameter"),
    ({"prompt_logprobs": 1}, "prompt_logprobs", "unsupported_parameter"),
    ({"guided_regex": "a", "structured_outputs": {"regex": "b"}}, "guided_regex", None),
    ({"suffix": "x", "prompt": [1, 2]}, "suffix", None),
    ({"seed": 2**64}, "seed", "invalid_value"),
]


@pytest.fixture(scope="module")
def strict_server(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v11-tekken")
    with serve(s.dir, lambda p, sp, i: [2], max_logprobs=5) as running:
        yield running


@pytest.mark.parametrize("change, param, code", BAD, ids=[str(b[0])[:40] for b in BAD])
def test_bad_fields_are_400s_naming_them(strict_server, change, param, code):
    client, fake = strict_server
    fake.requests.clear()
    r = post(client, {"prompt": PROMPT, **change})
    assert not fake.requests  # nothing reached the engine
    assert_error(r, 400, param=param, code="*" if code is None else code)


def test_prompt_over_the_context(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v3-spm")
    with serve(s.dir, lambda p, sp, i: [2], max_model_len=64, max_completion_choices=4) as (client, fake):
        long_text = post(client, {"prompt": "word " * 100})
        long_ids = post(client, {"prompt": [[1] * 10, [1] * 65]})
        huge = post(client, {"prompt": "x" * 5_000_000})  # refused without tokenizing
        fits = post(client, {"prompt": "word " * 20, "max_tokens": 40})
        over = post(client, {"prompt": "word " * 20, "max_tokens": 60})
        many = post(client, {"prompt": ["a"] * 5})
        times_n = post(client, {"prompt": ["a"] * 2, "n": 3})
    assert_error(long_text, 400, param="prompt", code="context_length_exceeded")
    assert_error(long_ids, 400, param="prompt[1]", code="context_length_exceeded")
    assert_error(huge, 400, param="prompt", code="context_length_exceeded")
    assert fits.status_code == 200
    assert_error(over, 400, param="max_tokens", code="context_length_exceeded")
    assert_error(many, 400, param="prompt", code="invalid_value")
    assert_error(times_n, 400, param="n", code="invalid_value")


def test_unknown_model_and_bodies(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v3-spm")
    with serve(s.dir, lambda p, sp, i: [2]) as (client, _):
        assert_error(post(client, {"prompt": "a", "model": "gpt-3.5-turbo-instruct"}), 404,
                     param="model", code="model_not_found")
        assert_error(client.post("/v1/completions", content=b"{nope"), 400, code="invalid_json")
        assert_error(client.post("/v1/completions", json=[1, 2]), 400, code="invalid_type")
        assert ok(client.post("/v1/completions", json={"prompt": "a"}))  # model is optional


def test_engine_rejection_and_failure(tokenizer_dirs):
    from server.engine.base import InvalidConstraint
    from server.engine.fake import FakeEngine

    s = Script(tokenizer_dirs, "v11-tekken")

    class Refusing(FakeEngine):
        async def generate(self, prompt, sampling, request_id, *, images=()):
            raise InvalidConstraint("grammar does not compile")
            yield  # pragma: no cover

    with serve(s.dir, None, engine=Refusing(lambda p, sp, i: [2])) as (client, _):
        r = post(client, {"prompt": PROMPT, "structured_outputs": {"grammar": "root ::= x"}})
    assert_error(r, 400, param="structured_outputs")
    for stream in (True, False):
        failing = FakeEngine(lambda p, sp, i: cont(s, " one two three four"), fail_after=2)
        with serve(s.dir, None, engine=failing) as (client, _):
            r = post(client, {"prompt": [PROMPT, "Other"], "stream": stream})
            after = post(client, {"prompt": PROMPT})
        if stream:
            events = sse_events(r)
            assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "engine_error"
        else:
            assert_error(r, 500, code="engine_error")
        assert_error(after, 503, code="engine_unavailable")  # the process restarts


# -- operations (admission, loading, keys, metrics) -------------------------------------------

def test_keys_metrics_and_loading(tokenizer_dirs):
    from server import metrics

    s = Script(tokenizer_dirs, "v3-spm")
    before = metrics.REQUESTS.labels(status="200")._value.get()
    bad_before = metrics.REQUESTS.labels(status="400")._value.get()
    with serve(s.dir, lambda p, sp, i: cont(s, " x"), api_keys=["k"]) as (client, _):
        assert_error(post(client, {"prompt": "a"}), 401, code="invalid_api_key")
        auth = {"Authorization": "Bearer k"}
        ok(post(client, {"prompt": "a"}, headers=auth))
        post(client, {"prompt": ""}, headers=auth)
    assert metrics.REQUESTS.labels(status="200")._value.get() == before + 1
    assert metrics.REQUESTS.labels(status="400")._value.get() == bad_before + 1


def test_multi_prompt_stop_strings_abort_every_engine_request(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v7-tekken")
    with serve(s.dir, lambda p, sp, i: cont(s, " one. two three four five")) as (client, fake):
        body = ok(post(client, {"prompt": ["a", "b"], "stop": ".", "max_tokens": 64}))
    assert [c["text"] for c in body["choices"]] == [" one", " one"]
    ids = {r[2] for r in fake.requests}
    assert len(ids) == 2 and ids <= set(fake.aborted)


def test_admission_timeout_drain_and_loading_as_chat(tokenizer_dirs):
    import asyncio

    import httpx
    from fastapi.testclient import TestClient

    from server.app import create_app
    from tests.api.test_ops import _setup

    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 30}

    def run(app, state, factory, work):
        async def go():
            await state.load(factory)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
                return await work(c)
        return asyncio.run(go())

    state, fake, app, factory = _setup(tokenizer_dirs, max_inflight_requests=1)
    codes = run(app, state, factory, lambda c: asyncio.gather(
        *(c.post("/v1/completions", json=body) for _ in range(3))))
    assert sorted(r.status_code for r in codes) == [200, 429, 429]
    assert_error(next(r for r in codes if r.status_code == 429), 429, code="rate_limit_exceeded")
    assert state.admission.inflight == 0

    state, fake, app, factory = _setup(tokenizer_dirs, step_delay=0.05, request_timeout=0.3)

    async def timed(c):
        return (await c.post("/v1/completions", json=body),
                await c.post("/v1/completions", json={**body, "prompt": [PROMPT, "b"], "stream": True}))

    plain, stream = run(app, state, factory, timed)
    assert_error(plain, 504, code="request_timeout")
    assert sse_events(stream)[-2]["error"]["code"] == "request_timeout"
    assert len(set(fake.aborted)) == 3 and not fake.running

    state, fake, app, factory = _setup(tokenizer_dirs, step_delay=0.05, words=200)

    async def drained(c):
        slow = asyncio.ensure_future(c.post("/v1/completions", json={**body, "max_tokens": 200}))
        await asyncio.sleep(0.1)
        await state.drain(timeout=0.2)  # the drain switch is shared with chat's
        return await slow, await c.post("/v1/completions", json=body)

    slow, refused = run(app, state, factory, drained)
    assert_error(slow, 503, code="server_draining")
    assert_error(refused, 503, code="server_draining")

    state, _, app, _ = _setup(tokenizer_dirs)

    async def never_loads():
        await asyncio.Event().wait()

    with TestClient(create_app(state, never_loads), raise_server_exceptions=False) as client:
        for path, payload in (("/v1/completions", body), ("/tokenize", {"prompt": "a"}),
                              ("/detokenize", {"tokens": [1]})):
            assert_error(client.post(path, json=payload), 503, code="model_loading")


def test_input_budgets_as_chat(strict_server):
    client, fake = strict_server
    many = post(client, {"prompt": PROMPT, "stop": [f"s{i}" for i in range(17)]})
    long = post(client, {"prompt": PROMPT, "stop": ["x" * 1001]})
    deep = post(client, {"prompt": PROMPT, "structured_outputs": {"json": '{"a":' * 80 + "1" + "}" * 80}})
    assert_error(many, 400, param="stop", code="too_many_stop_strings")
    assert_error(long, 400, param="stop[0]", code="stop_too_long")
    assert_error(deep, 400, param="structured_outputs.json", code="json_too_deep")


def test_every_choice_gets_the_prompts_logprobs(tokenizer_dirs):
    """vLLM merges outputs that queue up and keeps only the first one's prompt logprobs: the
    choices of one prompt share them."""
    import dataclasses

    from server.engine.fake import FakeEngine

    s = Script(tokenizer_dirs, "v11-tekken")

    class Merging(FakeEngine):
        async def generate(self, prompt, sampling, request_id, *, images=()):
            async for batch in super().generate(prompt, sampling, request_id, images=images):
                yield [d if d.index == 0 else dataclasses.replace(d, prompt_logprobs=None)
                       for d in batch]

    engine = Merging(lambda p, sp, i: cont(s, f" answer {i}"))
    with serve(s.dir, None, engine=engine) as (client, fake):
        body = ok(post(client, {"prompt": PROMPT, "n": 3, "temperature": 1.0, "echo": True,
                                "logprobs": 1}))
    assert fake.requests[0][1].n == 3
    prompt_len = body["usage"]["prompt_tokens"]
    first = body["choices"][0]["logprobs"]["token_logprobs"][:prompt_len]
    assert first[0] is None and all(isinstance(v, float) for v in first[1:])
    for choice in body["choices"][1:]:
        assert choice["logprobs"]["token_logprobs"][:prompt_len] == first
