"""``/openapi.json`` and ``/docs``: a valid OpenAPI 3.1 document of every route, whose request
schemas accept real requests and whose response schemas describe what the server really sends."""

from __future__ import annotations

import asyncio
import copy
import json
import re
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator

from server.app import create_app
from server.model import load_model_info
from server.openapi import document
from server.settings import Settings
from server.state import ServerState
from tests.api.harness import MODEL, serve, sse_events
from tests.api.test_structured import SCHEMA
from tests.api.test_tools import ARGS, TOOL_REQUEST, Script

ROUTES = {
    ("POST", "/v1/chat/completions"), ("POST", "/v1/responses"), ("POST", "/v1/completions"),
    ("POST", "/tokenize"), ("POST", "/detokenize"),
    ("GET", "/v1/responses/{response_id}"), ("DELETE", "/v1/responses/{response_id}"),
    ("GET", "/v1/responses/{response_id}/input_items"),
    ("POST", "/v1/messages"), ("POST", "/v1/messages/count_tokens"),
    ("GET", "/v1/models"), ("GET", "/v1/models/{model_id}"),
    ("GET", "/health"), ("GET", "/ready"), ("GET", "/status"), ("GET", "/metrics"),
}
WEATHER = {"type": "function", "name": "get_current_weather", "description": "Weather in a city.",
           "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                          "required": ["location"]}}
CHAT_REQUEST = {  # tools, a json_schema response format, an image, a tool round trip
    **TOOL_REQUEST,
    "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA,
                                                               "strict": True}},
    "messages": [*TOOL_REQUEST["messages"],
                 {"role": "assistant", "content": None, "tool_calls": [{
                     "id": "abcDEF123", "type": "function",
                     "function": {"name": "get_current_weather", "arguments": ARGS}}]},
                 {"role": "tool", "tool_call_id": "abcDEF123", "content": "22 degrees"},
                 {"role": "user", "content": [
                     {"type": "text", "text": "And here?"},
                     {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}],
    "stream_options": {"include_usage": True}, "logprobs": True, "top_logprobs": 2, "seed": 7,
    "structured_outputs": None, "stop": ["END"],
}
COMPLETION_REQUEST = {
    "model": MODEL, "prompt": ["Once upon a time", "Le petit"], "n": 2, "max_tokens": 8,
    "echo": True, "logprobs": 2, "stop": ["END"], "seed": 3, "temperature": 0.5, "top_k": 5,
    "structured_outputs": {"regex": "[a-z ]+"}, "skip_special_tokens": False, "user": None,
}
RESPONSES_REQUEST = {
    "model": MODEL, "instructions": "Be brief.", "tools": [WEATHER],
    "tool_choice": {"type": "function", "name": "get_current_weather"},
    "input": [{"role": "user", "content": "one"},
              {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "two"}]},
              {"type": "function_call", "call_id": "call_1", "name": "get_current_weather",
               "arguments": ARGS},
              {"type": "function_call_output", "call_id": "call_1", "output": "22 degrees"}],
    "text": {"format": {"type": "json_schema", "name": "w", "schema": SCHEMA, "strict": True}},
    "reasoning": {"effort": "high"}, "max_output_tokens": 64, "metadata": {"a": "b"},
    "store": False, "temperature": None, "top_k": 5,
}


def _validator(doc: dict[str, Any], name: str, closed: bool = False) -> Draft202012Validator:
    """A validator for the document's schema ``name``; ``closed``: every object of the
    document's schemas refuses fields it does not list (so the document lists all we send)."""
    components = doc["components"]
    if closed:
        components = copy.deepcopy(components)
        _close(components["schemas"])
    return Draft202012Validator({"components": components, "$ref": f"#/components/schemas/{name}"})


def _close(node: Any, in_all_of: bool = False) -> None:
    if isinstance(node, list):
        for item in node:
            _close(item, in_all_of)
    elif isinstance(node, dict):
        if (node.get("type") == "object" and "properties" in node and not in_all_of
                and "additionalProperties" not in node):
            node["additionalProperties"] = False
        for key, value in node.items():
            _close(value, key == "allOf")


def assert_valid(doc: dict[str, Any], name: str, payload: Any, closed: bool = True) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}"
              for e in _validator(doc, name, closed).iter_errors(payload)]
    assert not errors, f"{name} violations:\n" + "\n".join(errors)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        if node.get("propertyName") and isinstance(node.get("mapping"), dict):
            found += list(node["mapping"].values())
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _resolve(doc: dict[str, Any], pointer: str) -> Any:
    assert pointer.startswith("#/"), pointer
    node: Any = doc
    for part in pointer[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


@pytest.fixture(scope="module")
def published(tokenizer_dirs) -> dict[str, Any]:
    with serve(tokenizer_dirs["v3-spm"], lambda p, s, i: [2]) as (client, _):
        r = client.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    return r.json()


def test_document_is_openapi_31_with_every_route(tokenizer_dirs, published):
    OpenAPIV31SpecValidator(published).validate()
    assert published["openapi"].startswith("3.1")
    operations = {(m.upper(), p) for p, item in published["paths"].items() for m in item
                  if m != "parameters"}
    assert operations == ROUTES
    with serve(tokenizer_dirs["v3-spm"], lambda p, s, i: [2]) as (client, _):
        served = {(m, re.sub(r":\w+}", "}", route.path)) for route in client.app.routes
                  if isinstance(route, APIRoute) for m in route.methods}
    assert served == ROUTES  # a new route needs its entry in server/openapi.py
    for path, item in published["paths"].items():
        for method, op in item.items():
            if method == "parameters":
                continue
            assert op["operationId"] and "200" in op["responses"]
            secured = path.startswith("/v1") or path in ("/metrics", "/tokenize", "/detokenize")
            anthropic = path.startswith("/v1/messages")  # Anthropic's envelope; x-api-key too
            schemes = [{"bearerAuth": []}, {"apiKeyAuth": []}] if anthropic else [{"bearerAuth": []}]
            assert (op.get("security") == schemes) == secured, path
            if secured:
                unauthorized = "AnthropicUnauthorized" if anthropic else "Unauthorized"
                assert op["responses"]["401"] == {"$ref": f"#/components/responses/{unauthorized}"}
    assert published["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert document() is document()  # built once


def test_every_ref_resolves_and_internal_fields_stay_out(published):
    refs = _refs(published)
    assert len(refs) > 100
    for pointer in set(refs):
        assert isinstance(_resolve(published, pointer), dict), pointer
    schemas = published["components"]["schemas"]
    chat = published["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CreateChatCompletionRequest"}
    streamed = chat["responses"]["200"]["content"]
    assert set(streamed) == {"application/json", "text/event-stream"}
    assert "extras" not in schemas["CreateResponse"]["properties"]
    assert schemas["CreateResponse"]["required"] == ["input"]
    assert "schema" in schemas["JsonSchemaFormat"]["properties"]
    assert "schema" in schemas["TextFormat"]["properties"]
    assert "json" in schemas["StructuredOutputs"]["properties"]
    assert "schema_" not in json.dumps(published) and '"json_"' not in json.dumps(published)
    assert set(schemas["ErrorResponse"]["required"]) == {"error"}
    assert set(schemas["Error"]["required"]) == {"message", "type", "param", "code"}


def test_real_requests_match_the_request_schemas(published):
    chat = _validator(published, "CreateChatCompletionRequest")
    responses = _validator(published, "CreateResponse")
    for body in (TOOL_REQUEST, CHAT_REQUEST):
        assert_valid(published, "CreateChatCompletionRequest", body, closed=False)
    for body in (RESPONSES_REQUEST, {"model": MODEL, "input": "Hi", "stream": True}):
        assert_valid(published, "CreateResponse", body, closed=False)
    completions = _validator(published, "CreateCompletionRequest")
    for prompt in ("text", ["a", "b"], [1, 2, 3], [[1, 2], [3]]):
        assert_valid(published, "CreateCompletionRequest", {**COMPLETION_REQUEST, "prompt": prompt},
                     closed=False)
    assert not completions.is_valid({"model": MODEL})
    assert not completions.is_valid({**COMPLETION_REQUEST, "prompt": [["a"]]})
    assert not completions.is_valid({**COMPLETION_REQUEST, "logprobs": 21})
    # the schemas are not vacuous
    assert not chat.is_valid({"model": MODEL, "messages": []})
    assert not chat.is_valid({**CHAT_REQUEST, "temperature": 3})
    assert not chat.is_valid({**CHAT_REQUEST, "response_format": {"type": "xml"}})
    assert not responses.is_valid({"model": MODEL})
    assert not responses.is_valid({**RESPONSES_REQUEST, "input": [{"type": "function_call"}]})
    assert not responses.is_valid({**RESPONSES_REQUEST, "tools": [{"type": "function"}]})


def test_real_responses_match_the_response_schemas(tokenizer_dirs, published, tmp_path):
    s = Script(tokenizer_dirs, "v13-tekken")
    tokens = s.ids("[THINK]", "Need the weather.", "[/THINK]", "[TOOL_CALLS]", "get_current_weather",
                   "[ARGS]", ARGS)
    store = f"sqlite:///{tmp_path}/responses.db"

    def post(client, path, body, name, **headers):
        assert_valid(published, name, body, closed=False)
        return client.post(path, json=body, headers=headers)

    with serve(s.dir, lambda p, sp, i: tokens, responses_store=store) as (client, _):
        chat = post(client, "/v1/chat/completions", {**TOOL_REQUEST, "logprobs": True, "top_logprobs": 2},
                    "CreateChatCompletionRequest")
        mistral = post(client, "/v1/chat/completions", TOOL_REQUEST, "CreateChatCompletionRequest",
                       **{"User-Agent": "mistral-client-python/1.9.0"})
        stream = post(client, "/v1/chat/completions", {**TOOL_REQUEST, "stream": True,
                      "stream_options": {"include_usage": True}}, "CreateChatCompletionRequest")
        made = post(client, "/v1/responses", {"model": MODEL, "input": "Weather in Paris?",
                                              "tools": [WEATHER]}, "CreateResponse")
        events = post(client, "/v1/responses", {"model": MODEL, "input": "Weather?", "stream": True,
                                                "tools": [WEATHER], "store": False}, "CreateResponse")
        rid = made.json()["id"]
        got = client.get(f"/v1/responses/{rid}")
        items = client.get(f"/v1/responses/{rid}/input_items?limit=5")
        deleted = client.delete(f"/v1/responses/{rid}")
        listed, card = client.get("/v1/models"), client.get(f"/v1/models/{MODEL}")
        completion = post(client, "/v1/completions", COMPLETION_REQUEST, "CreateCompletionRequest")
        completion_stream = post(client, "/v1/completions", {**COMPLETION_REQUEST, "stream": True,
                                 "stream_options": {"include_usage": True}}, "CreateCompletionRequest")
        tokenized = post(client, "/tokenize", {"model": MODEL, "prompt": "Hi", "return_token_strs": True},
                         "TokenizeRequest")
        rendered = post(client, "/tokenize", {"messages": TOOL_REQUEST["messages"],
                                              "tools": TOOL_REQUEST["tools"]}, "TokenizeRequest")
        detokenized = post(client, "/detokenize", {"model": MODEL, "tokens": [1, 2, 3]},
                           "DetokenizeRequest")
        missing, bad = client.get("/v1/models/nope"), client.post("/v1/chat/completions", json={})
        probes = {name: client.get(f"/{name}") for name in ("health", "ready", "status")}
    message = chat.json()["choices"][0]["message"]
    assert message["tool_calls"] and message["reasoning"] and chat.json()["choices"][0]["logprobs"]
    assert isinstance(mistral.json()["choices"][0]["message"]["content"], list)
    for response, name in [(chat, "CreateChatCompletionResponse"), (mistral, "CreateChatCompletionResponse"),
                           (made, "Response"), (got, "Response"), (items, "ResponseItemList"),
                           (deleted, "DeletedResponse"), (listed, "ListModelsResponse"), (card, "Model"),
                           (completion, "CreateCompletionResponse"), (tokenized, "TokenizeResponse"),
                           (rendered, "TokenizeResponse"), (detokenized, "DetokenizeResponse"),
                           (probes["health"], "HealthStatus"), (probes["ready"], "ReadyStatus"),
                           (probes["status"], "ServerStatus")]:
        assert response.status_code == 200, response.text
        assert_valid(published, name, response.json())
    assert [i["type"] for i in made.json()["output"]] == ["reasoning", "function_call"]
    for response, status in [(missing, 404), (bad, 400)]:
        assert response.status_code == status
        assert_valid(published, "ErrorResponse", response.json())
    chunks = sse_events(stream)
    assert chunks[-1] == "[DONE]" and chunks[-2]["usage"]
    for chunk in chunks[:-1]:
        assert_valid(published, "CreateChatCompletionStreamResponse", chunk)
    assert completion.json()["choices"][0]["logprobs"]["token_logprobs"][0] is None  # echo
    chunks = sse_events(completion_stream)
    assert chunks[-1] == "[DONE]" and chunks[-2]["usage"] and chunks[-2]["choices"] == []
    for chunk in chunks[:-1]:
        assert_valid(published, "CreateCompletionResponse", chunk)
    kinds = set()
    for frame in events.text.strip().split("\n\n"):
        event = json.loads(frame.split("\ndata: ", 1)[1])
        assert_valid(published, "ResponseStreamEvent", event)
        kinds.add(event["type"])
    assert {"response.reasoning_text.delta", "response.function_call_arguments.done",
            "response.completed"} <= kinds


def test_metrics_documented_as_text(tokenizer_dirs, published):
    content = published["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert set(content) == {"text/plain"}
    with serve(tokenizer_dirs["v3-spm"], lambda p, s, i: [2]) as (client, _):
        assert client.get("/metrics").headers["content-type"].startswith("text/plain")


def test_docs_and_document_need_no_key(tokenizer_dirs):
    with serve(tokenizer_dirs["v3-spm"], lambda p, s, i: [2], api_keys=["k"]) as (client, _):
        spec, docs = client.get("/openapi.json"), client.get("/docs")
        no_key, with_key = client.get("/v1/models"), client.get(
            "/v1/models", headers={"Authorization": "Bearer k"})
    assert spec.status_code == 200 and spec.json()["paths"]
    assert docs.status_code == 200 and docs.headers["content-type"].startswith("text/html")
    assert "swagger-ui" in docs.text and "'/openapi.json'" in docs.text
    assert no_key.status_code == 401 and with_key.status_code == 200


def test_docs_work_while_the_model_loads(tokenizer_dirs):
    settings = Settings(model=str(tokenizer_dirs["v3-spm"]), served_model_name=MODEL,
                        responses_store="off")
    state = ServerState(settings=settings, model=load_model_info(settings), api_keys=[])

    async def never_loads():
        await asyncio.Event().wait()

    with TestClient(create_app(state, never_loads), raise_server_exceptions=False) as client:
        spec, docs = client.get("/openapi.json"), client.get("/docs")
        chat = client.post("/v1/chat/completions", json={"model": MODEL, "messages": [
            {"role": "user", "content": "hi"}]})
        assert state.phase == "loading"
    assert spec.status_code == 200 and spec.json()["openapi"].startswith("3.1")
    assert docs.status_code == 200
    assert chat.status_code == 503


MESSAGES_REQUEST = {
    "model": MODEL, "max_tokens": 2048, "system": [{"type": "text", "text": "Be brief."}],
    "tools": [{"name": "get_current_weather", "input_schema": WEATHER["parameters"]}],
    "tool_choice": {"type": "auto"}, "thinking": {"type": "enabled", "budget_tokens": 1024},
    "stop_sequences": ["END"], "temperature": 0.5, "metadata": {"user_id": "u"},
    "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [
            {"type": "thinking", "thinking": "Look it up.", "signature": "x"},
            {"type": "tool_use", "id": "toolu_1", "name": "get_current_weather",
             "input": {"location": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "22 degrees"},
            {"type": "text", "text": "And now?"}]}],
}


def test_messages_requests_responses_and_events_match_the_document(tokenizer_dirs, published):
    s = Script(tokenizer_dirs, "v13-tekken")
    tokens = s.ids("[THINK]", "Need the weather.", "[/THINK]", "Checking.", "[TOOL_CALLS]",
                   "get_current_weather", "[ARGS]", ARGS)
    assert_valid(published, "CreateMessageRequest", MESSAGES_REQUEST, closed=False)
    request = _validator(published, "CreateMessageRequest")
    assert not request.is_valid({"model": MODEL, "max_tokens": 8, "messages": []})
    assert not request.is_valid({**MESSAGES_REQUEST, "temperature": 2})
    assert not request.is_valid({**MESSAGES_REQUEST, "messages": [{"role": "user", "content": [
        {"type": "video"}]}]})
    with serve(s.dir, lambda p, sp, i: tokens) as (client, _):
        made = client.post("/v1/messages", json=MESSAGES_REQUEST)
        count = client.post("/v1/messages/count_tokens", json=MESSAGES_REQUEST)
        stream = client.post("/v1/messages", json={**MESSAGES_REQUEST, "stream": True})
        bad = client.post("/v1/messages", json={"model": MODEL, "messages": []})
    assert made.status_code == 200, made.text
    assert_valid(published, "Message", made.json())
    assert [b["type"] for b in made.json()["content"]] == ["thinking", "text", "tool_use"]
    assert_valid(published, "MessageTokensCount", count.json())
    assert bad.status_code == 400
    assert_valid(published, "AnthropicErrorResponse", bad.json())
    kinds = set()
    for frame in stream.text.strip().split("\n\n"):
        event = json.loads(frame.split("\ndata: ", 1)[1])
        assert_valid(published, "MessageStreamEvent", event)
        kinds.add(event["type"])
    assert {"message_start", "ping", "content_block_delta", "message_delta", "message_stop"} <= kinds
