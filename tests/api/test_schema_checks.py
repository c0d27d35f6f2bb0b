"""JSON schemas are checked once, off the event loop."""

from __future__ import annotations

import threading
import uuid

import pytest

from server.chat import schemas
from server.chat.enforce import closed_objects
from tests.api.harness import MODEL, serve, text_tokens
from tests.conftest import tokenizer_for

BASE = {"model": MODEL, "messages": [{"role": "user", "content": "json please"}]}


def fresh_schema() -> dict:
    """A schema no earlier test has sent (the cache lives as long as the process)."""
    return {"type": "object", "title": uuid.uuid4().hex,
            "properties": {"a": {"type": "boolean"}, "b": {"enum": ["x", "y"]}}, "required": ["a"]}


@pytest.fixture
def checks(monkeypatch):
    """Record the thread of every meta-schema check the server makes."""
    seen: list[str] = []
    original = schemas._outcome

    def spy(schema):
        seen.append(threading.current_thread().name)
        return original(schema)

    monkeypatch.setattr(schemas, "_outcome", spy)
    return seen


def _requests(schema: dict) -> list[dict]:
    reordered = dict(reversed(list(schema.items())))  # same schema, other key order
    tool = {"type": "function", "function": {"name": "fill", "parameters": schema}}
    return [
        {**BASE, "response_format": {"type": "json_schema", "json_schema": {"name": "f", "schema": schema}}},
        {**BASE, "structured_outputs": {"json": reordered}},
        {**BASE, "tools": [tool], "tool_choice": "auto"},
    ]


def test_a_repeated_schema_is_checked_once_and_not_on_the_event_loop(tokenizer_dirs, checks):
    directory = tokenizer_dirs["v3-spm"]
    tok = tokenizer_for(directory)
    schema = fresh_schema()
    with serve(directory, lambda p, s, i: text_tokens(tok, '{"a":true}')) as (client, fake):
        for body in _requests(schema) * 2:
            r = client.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
        loop_thread = client.portal.call(lambda: threading.current_thread().name)
    # six requests, one schema in two key orders (the digest keeps key order: generation
    # follows it): one check for each order
    assert len(checks) == 2, checks
    assert loop_thread not in checks
    assert [spec.constraint.value for _, spec, _ in fake.requests[:2]] == [
        closed_objects(schema), closed_objects(dict(reversed(schema.items())))]


def test_an_invalid_schema_is_refused_each_time_off_the_loop_and_never_remembered(
        tokenizer_dirs, checks):
    bad = {**fresh_schema(), "type": "objekt"}
    tool = {"type": "function", "function": {"name": "fill", "parameters": bad}}
    with serve(tokenizer_dirs["v3-spm"], lambda p, s, i: []) as (client, fake):
        for _ in range(2):
            r = client.post("/v1/chat/completions", json={
                **BASE, "response_format": {"type": "json_schema", "json_schema": {"name": "f", "schema": bad}}})
            assert r.status_code == 400
            error = r.json()["error"]
            assert error["param"] == "response_format.json_schema.schema"
            assert error["message"].startswith("Invalid JSON schema: 'objekt' is not valid under any")
            r = client.post("/v1/chat/completions", json={**BASE, "tools": [tool]})
            assert r.status_code == 400
            assert r.json()["error"]["param"] == "tools[0].function.parameters"
            assert "Invalid JSON schema for tool 'fill'" in r.json()["error"]["message"]
        loop_thread = client.portal.call(lambda: threading.current_thread().name)
    assert len(checks) == 4 and loop_thread not in checks  # refusals cost CPU, not memory
    assert fake.requests == []


def test_a_schema_string_with_nan_is_not_json(tokenizer_dirs):
    with serve(tokenizer_dirs["v3-spm"], lambda p, s, i: []) as (client, fake):
        r = client.post("/v1/chat/completions", json={
            **BASE, "structured_outputs": {"json": '{"type": "number", "maximum": NaN}'}})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "structured_outputs.json"
    assert r.json()["error"]["message"] == "The JSON schema is not valid JSON."
    assert fake.requests == []
