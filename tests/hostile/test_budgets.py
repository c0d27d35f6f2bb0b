"""Input budgets (issue #17, items 1, 3, 4 and the budget list): every request's cost is bounded
while it is parsed, and every violation is a 400 naming the field and the budget.

Each test asserts what the client sees (status, ``param``, ``code``), that the engine never saw
the request (nothing generated, nothing stored), and that the server keeps serving."""

from __future__ import annotations

import json
import threading

import pytest

from server.chat import schemas
from tests.api.harness import MODEL, serve
from tests.api.test_tools import Script
from tests.spec import assert_error

USER = [{"role": "user", "content": "hi"}]


def nested(depth: int, key: str = "x-a") -> dict:
    value: dict = {}
    for _ in range(depth - 1):
        value = {key: value}
    return value


@pytest.fixture
def app(tokenizer_dirs, tmp_path):
    s = Script(tokenizer_dirs, "v3-spm")
    tokens = s.ids("ok")
    with serve(s.dir, lambda p, sp, i: tokens, responses_store=f"sqlite:///{tmp_path}/r.db",
               max_json_depth=32, max_json_values=5000, max_schema_bytes=4096, max_tools=4,
               max_stop_strings=3, max_stop_chars=20) as (client, fake):
        client.fake = fake
        client.db = tmp_path / "r.db"
        yield client


def chat(client, **body):
    return client.post("/v1/chat/completions", json={"model": MODEL, "messages": USER, **body})


def respond(client, **body):
    return client.post("/v1/responses", json={"model": MODEL, **body})


def stored_rows(client) -> int:
    import sqlite3

    if not client.db.exists():
        return 0
    with sqlite3.connect(client.db) as conn:
        tables = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
        return conn.execute("SELECT COUNT(*) FROM mserve_responses").fetchone()[0] if tables else 0


def refused(client, response, param, code):
    err = assert_error(response, 400, code=code)
    assert err["param"] == param or (param and (err["param"] or "").startswith(param)), err
    assert client.fake.requests == [] and stored_rows(client) == 0
    assert client.get("/health").status_code == 200
    return err


# -- JSON depth: every client-supplied structure ------------------------------------------
@pytest.mark.parametrize("path, body", [
    ("messages[0].content[0]", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "a", "extra": nested(40)}]}]}),
    ("tools[0].function.parameters", {"messages": USER, "tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "x-a": nested(40)}}}]}),
    ("response_format.json_schema.schema", {"messages": USER, "response_format": {
        "type": "json_schema", "json_schema": {"name": "n", "schema": nested(40)}}}),
    ("vllm_xargs", {"messages": USER, "vllm_xargs": {"a": nested(40)}}),
])
def test_chat_structures_nested_too_deep(app, path, body):
    err = refused(app, app.post("/v1/chat/completions", json={"model": MODEL, **body}), path,
                  "json_too_deep")
    assert "max_json_depth" in err["message"]


def test_json_inside_a_string_has_the_same_depth_budget(app):
    schema = json.dumps({"type": "object", "x-a": nested(40)})
    refused(app, chat(app, structured_outputs={"json": schema}), "structured_outputs.json",
            "json_too_deep")


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path, body", [
    ("input[0]", {"input": [{"type": "message", "role": "user", "content": "hi",
                             "junk": nested(40)}]}),
    ("tools[0].parameters", {"input": "hi", "tools": [{"type": "function", "name": "f",
                                                       "parameters": nested(40)}]}),
    ("metadata", {"input": "hi", "metadata": {"a": nested(40)}}),
])
def test_responses_items_nested_too_deep_are_refused_before_generation(app, path, body, stream):
    """Before: an item nested ~255 levels passed parsing, generation ran, then storing it failed
    in orjson: a 500 after the answer (JSON) or a stream without response.completed."""
    refused(app, respond(app, stream=stream, **body), path, "json_too_deep")


def test_a_body_deeper_than_any_parser_goes_is_a_400(app):
    raw = '{"model": "m", "messages": ' + "[" * 2000 + "]" * 2000 + "}"  # past orjson's own 1024
    r = app.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    refused(app, r, None, "json_too_deep")


# -- JSON values --------------------------------------------------------------------------
def test_a_body_with_too_many_values_is_refused_before_it_is_parsed(app):
    r = chat(app, messages=USER, logit_bias={str(i): 0 for i in range(6000)})
    err = refused(app, r, None, "json_too_large")
    assert "max_json_values" in err["message"]


# -- schemas, tools, stop strings -----------------------------------------------------------
BIG = {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(300)}}


@pytest.mark.parametrize("path, body", [
    ("response_format.json_schema.schema",
     {"response_format": {"type": "json_schema", "json_schema": {"name": "n", "schema": BIG}}}),
    ("structured_outputs.json", {"structured_outputs": {"json": json.dumps(BIG)}}),
    ("tools[1].function.parameters", {"tools": [
        {"type": "function", "function": {"name": "a", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "b", "parameters": BIG}}]}),
])
def test_schemas_over_the_size_budget(app, path, body):
    err = refused(app, chat(app, **body), path, "schema_too_large")
    assert "max_schema_bytes" in err["message"]


def test_responses_schemas_over_the_size_budget_name_the_responses_field(app):
    r = respond(app, input="hi", text={"format": {"type": "json_schema", "name": "n", "schema": BIG}})
    refused(app, r, "text.format.schema", "schema_too_large")
    r = respond(app, input="hi", tools=[{"type": "function", "name": "f", "parameters": BIG}])
    refused(app, r, "tools[0].parameters", "schema_too_large")


def test_too_many_tools(app):
    tools = [{"type": "function", "function": {"name": f"t{i}"}} for i in range(5)]
    refused(app, chat(app, tools=tools), "tools", "too_many_tools")


@pytest.mark.parametrize("stop, param, code", [
    (["a", "b", "c", "d"], "stop", "too_many_stop_strings"),
    (["ok", "x" * 21], "stop[1]", "stop_too_long"),
    ("x" * 21, "stop", "stop_too_long"),
])
def test_stop_strings_over_budget(app, stop, param, code):
    refused(app, chat(app, stop=stop), param, code)
    refused(app, respond(app, input="hi", stop=stop), param, code)


def test_within_every_budget_the_request_is_served(app):
    r = chat(app, stop=["a" * 20, "b", "c"], tools=[{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "x-a": nested(20)}}}])
    assert r.status_code == 200, r.text
    assert len(app.fake.requests) == 1


# -- memory: refused schemas are never remembered ------------------------------------------
def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def distinct_schema(i: int, size: int, extra: dict) -> dict:
    return {"type": "object", "title": f"s{i}", **extra,
            "properties": {f"p{k}": {"type": "string", "description": f"{i}:{k}:" + "d" * 1000}
                           for k in range(size // 1024)}}


@pytest.mark.parametrize("kind, extra, code", [
    ("invalid", {"minProperties": -1}, None),  # refused by the meta-schema check
    ("unenforceable", {"not": {"type": "null"}}, "unsupported_schema_keyword"),
])
def test_fifty_distinct_refused_multi_megabyte_schemas_leave_no_memory_behind(
        tokenizer_dirs, kind, extra, code):
    """Before: the schema caches kept the whole text of every schema as the key plus parsed
    copies, refused ones included: 13 MB of distinct refused schemas left ~116 MB resident."""
    s = Script(tokenizer_dirs, "v3-spm")
    with serve(s.dir, lambda p, sp, i: [2], max_schema_bytes=8 * 1024 * 1024,
               max_body_bytes=16 * 1024 * 1024, max_json_values=1_000_000) as (client, fake):
        def send(i: int):
            schema = distinct_schema(i, 2 * 1024 * 1024, extra)
            return chat(client, response_format={"type": "json_schema", "json_schema": {
                "name": "n", "schema": schema}})

        assert_error(send(-1), 400, param="response_format.json_schema.schema", code=code)
        used, before = schemas._memory.used, rss_bytes()
        for i in range(50):
            assert_error(send(i), 400, param="response_format.json_schema.schema", code=code)
        grown = rss_bytes() - before
        # at most a verdict per schema (valid ones that generation then refuses), no copies
        assert schemas._memory.used - used <= 50 * schemas.ENTRY_COST
    assert fake.requests == []
    assert grown < 100 * 1024 * 1024, f"resident memory grew by {grown / 2**20:.0f} MB"


# -- heavy bodies are handled off the event loop --------------------------------------------
def test_big_bodies_are_parsed_validated_and_rendered_off_the_event_loop(tokenizer_dirs,
                                                                         monkeypatch):
    from server import budgets
    from server.chat import service

    seen: dict[str, str] = {}
    for module, name in ((budgets, "check_depth"), (service.ChatService, "_prepare_with")):
        original = getattr(module, name)

        def spy(*args, _original=original, _name=name, **kwargs):
            seen[_name] = threading.current_thread().name
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    s = Script(tokenizer_dirs, "v3-spm")
    with serve(s.dir, lambda p, sp, i: [2], max_model_len=1 << 20) as (client, fake):
        loop = client.portal.call(lambda: threading.current_thread().name)
        many = [{"role": "user" if k % 2 == 0 else "assistant", "content": f"m{k}"}
                for k in range(20001)]
        r = chat(client, messages=many)
        assert r.status_code == 200, r.text
        assert set(seen) == {"check_depth", "_prepare_with"} and loop not in seen.values(), seen
        seen.clear()
        assert chat(client).status_code == 200  # a small request stays on the loop
        assert seen == {"check_depth": loop, "_prepare_with": loop}


# -- the same budgets through Anthropic's Messages API, in its envelope -----------------------
@pytest.mark.parametrize("body, says", [
    ({"messages": [{"role": "user", "content": "hi"}], "metadata": {"x": nested(40)}},
     "max_json_depth"),
    ({"messages": [{"role": "user", "content": "hi"}], "stop_sequences": ["a", "b", "c", "d"]},
     "max_stop_strings"),
    ({"messages": [{"role": "user", "content": "hi"}], "tools": [
        {"name": "f", "input_schema": BIG}]}, "max_schema_bytes"),
])
def test_messages_api_budgets_in_anthropics_envelope(app, body, says):
    r = app.post("/v1/messages", json={"model": MODEL, "max_tokens": 8, **body})
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    assert says in err["error"]["message"]
    assert app.fake.requests == []



# -- integers past 64 bits (the JSON parser reads them as floats) --------------------------------
@pytest.mark.parametrize("path, body, param", [
    ("/v1/chat/completions", {"messages": USER, "top_k": 10**30}, "top_k"),
    ("/v1/chat/completions", {"messages": USER, "thinking_token_budget": 10**30},
     "thinking_token_budget"),
    ("/v1/completions", {"prompt": "hi", "top_k": 10**30}, "top_k"),
])
def test_integers_past_64_bits_are_a_400(app, path, body, param):
    refused(app, app.post(path, json={"model": MODEL, **body}), param, "*")


def test_messages_integers_past_64_bits_are_a_400(app):
    r = app.post("/v1/messages", json={"model": MODEL, "max_tokens": 8, "messages": USER,
                                       "top_k": 10**30})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"].startswith("top_k")
    assert app.fake.requests == []


@pytest.mark.parametrize("limit", ["²", "9" * 5000, "0", "1001", "-1", "x"])
def test_anthropic_model_pages_refuse_a_bad_limit(app, limit):
    r = app.get("/v1/models", params={"limit": limit}, headers={"anthropic-version": "2023-06-01"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"].startswith("limit: ")
    assert app.get("/v1/models", params={"after_id": "x" * 10_000},
                   headers={"anthropic-version": "2023-06-01"}).status_code == 400
