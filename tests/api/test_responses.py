"""``/v1/responses`` through the whole HTTP stack over the scripted engine: shapes (validated
against OpenAI's published schemas), typed stream events, the store, tools, reasoning, errors."""

from __future__ import annotations

import json

import pytest
from openai import OpenAI
from pydantic import BaseModel

from tests.api.harness import MODEL, serve
from tests.api.test_tools import ARGS, Script
from tests.spec import assert_error, assert_valid_response

WEATHER = {"type": "function", "name": "get_current_weather", "description": "Weather in a city.",
           "parameters": {"type": "object", "properties": {"location": {"type": "string"},
                                                           "unit": {"type": "string"}},
                          "required": ["location"]}}
EVENT_SCHEMA = {
    "response.created": "ResponseCreatedEvent", "response.in_progress": "ResponseInProgressEvent",
    "response.completed": "ResponseCompletedEvent", "response.incomplete": "ResponseIncompleteEvent",
    "response.failed": "ResponseFailedEvent",
    "response.output_item.added": "ResponseOutputItemAddedEvent",
    "response.output_item.done": "ResponseOutputItemDoneEvent",
    "response.content_part.added": "ResponseContentPartAddedEvent",
    "response.content_part.done": "ResponseContentPartDoneEvent",
    "response.output_text.delta": "ResponseTextDeltaEvent",
    "response.output_text.done": "ResponseTextDoneEvent",
    "response.reasoning_text.delta": "ResponseReasoningTextDeltaEvent",
    "response.reasoning_text.done": "ResponseReasoningTextDoneEvent",
    "response.function_call_arguments.delta": "ResponseFunctionCallArgumentsDeltaEvent",
    "response.function_call_arguments.done": "ResponseFunctionCallArgumentsDoneEvent",
}


def typed_events(response) -> list[dict]:
    """Parse a Responses SSE body: every frame ``event: <type>`` + ``data: <event>``, in order."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = []
    for frame in response.text.split("\n\n"):
        if not frame or frame.startswith(":"):
            continue
        head, data = frame.split("\n", 1)
        assert head.startswith("event: ") and data.startswith("data: "), frame
        event = json.loads(data[len("data: "):])
        assert event["type"] == head[len("event: "):]
        assert_valid_response(EVENT_SCHEMA[event["type"]], event)
        events.append(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


def create(client, **body):
    body.setdefault("model", MODEL)
    return client.post("/v1/responses", json=body)


@pytest.fixture
def store(tmp_path):
    return f"sqlite:///{tmp_path}/responses.db"


def test_plain_text_json_and_stream_agree(tokenizer_dirs, store):
    s = Script(tokenizer_dirs, "v3-spm")
    tokens = s.ids("Paris is the capital.")
    with serve(s.dir, lambda p, sp, i: tokens, responses_store=store) as (client, _):
        r = create(client, input="What is the capital of France?", temperature=0.2, metadata={"a": "b"})
        events = typed_events(create(client, input="What is the capital of France?", stream=True))
    assert r.status_code == 200, r.text
    body = r.json()
    assert_valid_response("Response", body)
    assert body["id"].startswith("resp_") and body["object"] == "response" and body["model"] == MODEL
    assert body["status"] == "completed" and body["error"] is None and body["completed_at"]
    assert body["output_text"] == "Paris is the capital." and body["metadata"] == {"a": "b"}
    (item,) = body["output"]
    assert item["type"] == "message" and item["role"] == "assistant" and item["status"] == "completed"
    assert item["content"][0]["text"] == "Paris is the capital."
    usage = body["usage"]
    assert usage["output_tokens"] == len(tokens) and usage["input_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert body["temperature"] == 0.2 and body["store"] is True

    kinds = [e["type"] for e in events]
    assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added"]
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == \
        "Paris is the capital."
    assert events[0]["response"]["status"] == "in_progress" and events[0]["response"]["output"] == []
    final = events[-1]["response"]
    assert final["output_text"] == body["output_text"] and final["usage"] == usage


def test_stored_get_input_items_delete_and_key_scoping(tokenizer_dirs, store):
    s = Script(tokenizer_dirs, "v3-spm")
    with serve(s.dir, lambda p, sp, i: s.ids("Hi."), responses_store=store,
               api_keys=["key-a", "key-b"]) as (client, _):
        a = {"Authorization": "Bearer key-a"}
        b = {"Authorization": "Bearer key-b"}
        made = client.post("/v1/responses", headers=a, json={
            "model": MODEL, "input": [{"role": "user", "content": "one"},
                                      {"type": "message", "role": "user",
                                       "content": [{"type": "input_text", "text": "two"}]}]}).json()
        rid = made["id"]
        got = client.get(f"/v1/responses/{rid}", headers=a)
        items = client.get(f"/v1/responses/{rid}/input_items", headers=a).json()
        asc = client.get(f"/v1/responses/{rid}/input_items?order=asc&limit=1", headers=a).json()
        other = client.get(f"/v1/responses/{rid}", headers=b)
        other_delete = client.delete(f"/v1/responses/{rid}", headers=b)
        other_continue = client.post("/v1/responses", headers=b, json={
            "model": MODEL, "input": "three", "previous_response_id": rid})
        unstored = client.post("/v1/responses", headers=a, json={
            "model": MODEL, "input": "x", "store": False}).json()
        unstored_get = client.get(f"/v1/responses/{unstored['id']}", headers=a)
        deleted = client.delete(f"/v1/responses/{rid}", headers=a)
        after = client.get(f"/v1/responses/{rid}", headers=a)
        no_key = client.get(f"/v1/responses/{rid}")
    assert got.status_code == 200 and got.json() == made
    assert_valid_response("ResponseItemList", items)
    assert [i["content"][0]["text"] for i in items["data"]] == ["two", "one"]  # newest first
    assert items["first_id"] == items["data"][0]["id"] and items["has_more"] is False
    assert [i["content"][0]["text"] for i in asc["data"]] == ["one"] and asc["has_more"] is True
    assert_error(other, 404, code="response_not_found")
    assert_error(other_delete, 404)
    assert_error(other_continue, 404, param="previous_response_id", code="previous_response_not_found")
    assert unstored["store"] is False
    assert_error(unstored_get, 404)
    assert deleted.json() == {"id": rid, "object": "response", "deleted": True}
    assert_error(after, 404)
    assert_error(no_key, 401)


def _prompt_text(s: Script, fake, index: int = -1) -> str:
    return s.inner.decode(fake.requests[index][0])


def test_previous_response_id_continues_the_conversation(tokenizer_dirs, store):
    s = Script(tokenizer_dirs, "v7-tekken")
    answers = iter(["The capital is Paris.", "About two million people."])
    with serve(s.dir, lambda p, sp, i: s.ids(next(answers)), responses_store=store) as (client, fake):
        first = create(client, input="Capital of France?", instructions="Answer in one sentence.").json()
        second = create(client, input="How many live there?", previous_response_id=first["id"],
                        instructions="Be terse.").json()
        prompt = _prompt_text(s, fake)
        items = client.get(f"/v1/responses/{second['id']}/input_items").json()
    assert second["previous_response_id"] == first["id"]
    assert second["output_text"] == "About two million people."
    for text in ("Capital of France?", "The capital is Paris.", "How many live there?", "Be terse."):
        assert text in prompt
    assert "Answer in one sentence." not in prompt  # instructions are not carried over
    assert [i["content"][0]["text"] for i in items["data"]] == ["How many live there?"]


@pytest.mark.parametrize("kind, script", [
    ("v11-tekken", ("[TOOL_CALLS]", "get_current_weather", "[ARGS]", ARGS)),
    ("v3-spm", ("[TOOL_CALLS]", " [{\"name\": \"get_current_weather\", \"arguments\": " + ARGS + "}]")),
])
def test_function_call_then_its_output(tokenizer_dirs, store, kind, script):
    s = Script(tokenizer_dirs, kind)
    outputs = iter([s.ids(*script), s.ids(*script), s.ids("It is 18 degrees in Paris.")])
    with serve(s.dir, lambda p, sp, i: next(outputs), responses_store=store) as (client, fake):
        body = create(client, input="Weather in Paris?", tools=[WEATHER]).json()
        events = typed_events(create(client, input="Weather in Paris?", tools=[WEATHER], stream=True))
        (call,) = body["output"]
        follow = create(client, previous_response_id=body["id"], tools=[WEATHER], input=[
            {"type": "function_call_output", "call_id": call["call_id"], "output": "18 C, sunny"}]).json()
        prompt = _prompt_text(s, fake)
        wrong = create(client, previous_response_id=body["id"], tools=[WEATHER], input=[
            {"type": "function_call_output", "call_id": "nope", "output": "x"}])
    assert_valid_response("Response", body)
    assert call["type"] == "function_call" and call["name"] == "get_current_weather"
    assert json.loads(call["arguments"]) == json.loads(ARGS) and call["call_id"]
    assert body["output_text"] == "" and body["tools"][0]["name"] == "get_current_weather"
    kinds = [e["type"] for e in events]
    assert kinds[2] == "response.output_item.added" and events[2]["item"]["type"] == "function_call"
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    deltas = "".join(e["delta"] for e in events if e["type"] == "response.function_call_arguments.delta")
    assert json.loads(done["arguments"]) == json.loads(ARGS) == json.loads(deltas)
    assert done["name"] == "get_current_weather"
    assert follow["output_text"] == "It is 18 degrees in Paris."
    assert "18 C, sunny" in prompt and "Weather in Paris?" in prompt
    assert_error(wrong, 400, param="input[0].call_id", code="unknown_call_id")


def test_stateless_tool_round_trip_and_forced_call(tokenizer_dirs, store):
    """The whole conversation in ``input`` (store: false clients), and a named tool_choice."""
    s = Script(tokenizer_dirs, "v11-tekken")
    with serve(s.dir, lambda p, sp, i: s.ids("Sunny."), responses_store=store) as (client, fake):
        r = create(client, store=False, tools=[WEATHER], input=[
            {"role": "user", "content": "Weather in Paris?"},
            {"type": "function_call", "call_id": "call_1", "name": "get_current_weather",
             "arguments": '{"location": "Paris"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}])
        forced = create(client, input="Weather?", tools=[WEATHER],
                        tool_choice={"type": "function", "name": "get_current_weather"})
        constraint = fake.requests[-1][1].constraint
    assert r.status_code == 200, r.text
    assert r.json()["output_text"] == "Sunny."
    assert forced.status_code == 200 and constraint is not None


def test_reasoning_items_and_tokens(tokenizer_dirs, store):
    s = Script(tokenizer_dirs, "v13-tekken")
    tokens = s.ids("[THINK]", "Compare digit by digit.", "[/THINK]", "9.8 is greater.")
    with serve(s.dir, lambda p, sp, i: tokens, responses_store=store) as (client, _):
        body = create(client, input="9.11 or 9.8?").json()
        events = typed_events(create(client, input="9.11 or 9.8?", stream=True))
    assert_valid_response("Response", body)
    reasoning, message = body["output"]
    assert reasoning["type"] == "reasoning" and reasoning["summary"] == []
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "Compare digit by digit."}]
    assert message["content"][0]["text"] == "9.8 is greater." and body["output_text"] == "9.8 is greater."
    assert 0 < body["usage"]["output_tokens_details"]["reasoning_tokens"] < body["usage"]["output_tokens"]
    streamed = "".join(e["delta"] for e in events if e["type"] == "response.reasoning_text.delta")
    assert streamed == "Compare digit by digit."
    order = [e["item"]["type"] for e in events if e["type"] == "response.output_item.added"]
    assert order == ["reasoning", "message"]


def test_json_schema_format_and_renamed_params(tokenizer_dirs, store):
    s = Script(tokenizer_dirs, "v11-tekken")
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
              "additionalProperties": False}
    with serve(s.dir, lambda p, sp, i: s.ids('{"city": "Paris"}'), responses_store=store) as (client, fake):
        ok = create(client, input="City?", text={"format": {"type": "json_schema", "name": "c",
                                                            "schema": schema, "strict": True}})
        constraint = fake.requests[-1][1].constraint
        bad_schema = create(client, input="x", text={"format": {
            "type": "json_schema", "name": "c", "schema": {"type": "object", "not": {}}}})
        bad_tool = create(client, input="x", tools=[{**WEATHER, "parameters": {"type": "nonsense"}}])
        too_long = create(client, input="x", max_output_tokens=10**6)
    assert ok.status_code == 200 and json.loads(ok.json()["output_text"]) == {"city": "Paris"}
    assert ok.json()["text"]["format"]["type"] == "json_schema" and constraint is not None
    assert_error(bad_schema, 400, param="text.format.schema")
    err = assert_error(bad_tool, 400)
    assert err["param"].startswith("tools[0].parameters"), err
    assert_error(too_long, 400, param="max_output_tokens")


def test_length_is_incomplete(tokenizer_dirs, store):
    s = Script(tokenizer_dirs, "v3-spm")
    tokens = s.ids("one two three four five six seven eight nine ten")
    with serve(s.dir, lambda p, sp, i: tokens, responses_store=store) as (client, _):
        body = create(client, input="Count.", max_output_tokens=3).json()
        events = typed_events(create(client, input="Count.", max_output_tokens=3, stream=True))
    assert_valid_response("Response", body)
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert body["output"][0]["status"] == "incomplete" and body["usage"]["output_tokens"] == 3
    assert events[-1]["type"] == "response.incomplete"


@pytest.mark.parametrize("body, status, param, code", [
    ({"input": [{"type": "web_search_call", "id": "x"}]}, 400, "input[0].type", "unsupported_item_type"),
    ({"input": "x", "tools": [{"type": "web_search"}]}, 400, "tools[0].type", "unsupported_tool"),
    ({"input": "x", "tools": [{"type": "file_search", "vector_store_ids": ["v"]}]}, 400, "tools[0].type",
     "unsupported_tool"),
    ({"input": "x", "tool_choice": {"type": "web_search_preview"}}, 400, "tool_choice", "unsupported_tool_choice"),
    ({"input": "x", "previous_response_id": "resp_missing"}, 404, "previous_response_id",
     "previous_response_not_found"),
    ({"input": "x", "background": True}, 400, "background", "unsupported_parameter"),
    ({"input": "x", "truncation": "auto"}, 400, "truncation", "unsupported_parameter"),
    ({}, 400, "input", "*"),
    ({"input": []}, 400, "input", "*"),
    ({"input": [{"role": "robot", "content": "x"}]}, 400, "input[0].role", "*"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]}, 400,
     "input[0].content[0].file_id", "unsupported_parameter"),
    ({"input": [{"role": "user", "content": [{"type": "input_file", "file_data": "x"}]}]}, 400,
     "input[0].content[0].type", "unsupported_content_type"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]}]},
     400, "input[0].content[0]", "image_input_not_supported"),  # a text-only model
    ({"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}, 400, "text.format", "*"),
    ({"input": "x", "model": "gpt-4o"}, 404, "model", "*"),
    ({"input": "x", "text": {"format": {"type": "json_object"}}, "structured_outputs": {"regex": "a+"}},
     400, "structured_outputs", "*"),  # two constraints at once
    ({"input": "x", "temperature": 5}, 400, "temperature", "*"),
    ({"input": [{"type": ["message"], "role": "user", "content": "x"}]}, 400, "input[0].type", "*"),
    ({"input": [{"role": "user", "content": "x"}, {"type": "function_call_output", "call_id": ["c"],
                                                   "output": "y"}]}, 400, "input[1].call_id", "*"),
    ({"input": [{"role": "user", "content": "x"},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"role": "user", "content": "and?"}]}, 400, "input[1]", "missing_function_call_output"),
    ({"input": [{"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1"}]}, 400, "input[1].output",
     "missing_required_parameter"),
    ({"input": [{"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": [
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]}]}, 400,
     "input[1].output[0].type", "unsupported_content_type"),
    ({"input": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "Let me see."},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": "y"}]}, 400,
     "input[3].call_id", "*"),  # an error inside a merged assistant turn names its own item
    ({"input": "x", "max_tool_calls": 2}, 400, "max_tool_calls", "unsupported_parameter"),
])
def test_bad_requests(tokenizer_dirs, store, body, status, param, code):
    s = Script(tokenizer_dirs, "v3-spm")
    with serve(s.dir, lambda p, sp, i: s.ids("ok"), responses_store=store) as (client, _):
        r = client.post("/v1/responses", json={"model": MODEL, **body})
        still = create(client, input="still there?")
    assert_error(r, status, param=param, code=code)
    assert still.status_code == 200


def test_store_down_is_503_and_unstored_requests_still_work(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v3-spm")
    down = "postgresql://nobody@127.0.0.1:1/none"  # loopback port 1: refused at once
    with serve(s.dir, lambda p, sp, i: s.ids("ok"), responses_store=down) as (client, _):
        stored = create(client, input="x", store=True)
        chained = create(client, input="x", store=False, previous_response_id="resp_1")
        got = client.get("/v1/responses/resp_1")
        deleted = client.delete("/v1/responses/resp_1")
        plain = create(client, input="x", store=False)
        defaulted = create(client, input="x")  # what SDKs send: no 'store' at all
        chat = client.post("/v1/chat/completions", json={"model": MODEL, "messages": [
            {"role": "user", "content": "x"}]})
    for r in (stored, chained, got, deleted):
        assert_error(r, 503, code="store_unavailable")
    assert plain.status_code == 200 and plain.json()["store"] is False
    assert defaulted.status_code == 200 and defaulted.json()["store"] is False  # says it was not kept
    assert chat.status_code == 200


def test_a_store_that_fails_after_generation_still_answers(tokenizer_dirs, store):
    """A full disk passes the ping but fails the write: the answer comes back, marked unstored."""
    from server.responses.store import StoreUnavailable

    async def full(record):
        raise StoreUnavailable("the response store is unavailable")

    s = Script(tokenizer_dirs, "v3-spm")
    with serve(s.dir, lambda p, sp, i: s.ids("Kept?"), responses_store=store) as (client, _):
        client.app.state.server.store.put = full
        body = create(client, input="x").json()
        events = typed_events(create(client, input="x", stream=True))
        got = client.get(f"/v1/responses/{body['id']}")
    assert body["output_text"] == "Kept?" and body["store"] is False
    assert events[-1]["type"] == "response.completed" and events[-1]["response"]["store"] is False
    assert_error(got, 404)


def test_a_stream_is_stored_before_its_last_event(tokenizer_dirs, store):
    """A client that chains as soon as it sees response.completed finds the response."""
    s = Script(tokenizer_dirs, "v3-spm")
    seen: list[str] = []
    with serve(s.dir, lambda p, sp, i: s.ids("One."), responses_store=store) as (client, _):
        real_put = client.app.state.server.store.put

        async def put(record):
            seen.append("put")
            await real_put(record)

        client.app.state.server.store.put = put
        with client.stream("POST", "/v1/responses", json={"model": MODEL, "input": "x",
                                                           "stream": True}) as r:
            for line in r.iter_lines():
                if line.startswith("event: "):
                    seen.append(line[len("event: "):])
    assert seen.index("put") < seen.index("response.completed")


def test_stored_input_items_have_openai_shapes(tokenizer_dirs, store):
    s = Script(tokenizer_dirs, "v11-tekken")
    with serve(s.dir, lambda p, sp, i: s.ids("Done."), responses_store=store) as (client, _):
        body = create(client, tools=[WEATHER], input=[
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
            {"role": "assistant", "content": "Let me look."},
            {"type": "function_call", "call_id": "c1", "name": "get_current_weather",
             "arguments": '{"location": "Paris"}'},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"}]).json()
        items = client.get(f"/v1/responses/{body['id']}/input_items?order=asc").json()
    assert_valid_response("ResponseItemList", items)
    assert [i["type"] for i in items["data"]] == ["message", "message", "function_call",
                                                  "function_call_output"]
    assert items["data"][0]["content"] == [{"type": "input_text", "text": "Weather?"}]
    assert all(i["status"] == "completed" for i in items["data"])


def test_store_off(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v3-spm")
    with serve(s.dir, lambda p, sp, i: s.ids("ok"), responses_store="off") as (client, _):
        r = create(client, input="x")
        chained = create(client, input="x", previous_response_id="resp_1")
    assert r.status_code == 200 and r.json()["store"] is False
    assert_error(chained, 400, param="previous_response_id", code="store_disabled")


class City(BaseModel):
    name: str
    country: str


def test_openai_sdk_create_stream_and_parse(tokenizer_dirs, store):
    s = Script(tokenizer_dirs, "v11-tekken")
    answer = '{"name": "Paris", "country": "France"}'
    with serve(s.dir, lambda p, sp, i: s.ids(answer), responses_store=store) as (client, _):
        oai = OpenAI(base_url="http://testserver/v1", api_key="k", http_client=client, max_retries=0)
        made = oai.responses.create(model=MODEL, input="A city, as JSON.")
        with oai.responses.stream(model=MODEL, input="A city, as JSON.") as stream:
            deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
            final = stream.get_final_response()
        parsed = oai.responses.parse(model=MODEL, input="A city.", text_format=City)
        again = oai.responses.retrieve(made.id)
    assert made.output_text == answer and "".join(deltas) == answer
    assert final.output_text == answer and final.status == "completed"
    assert parsed.output_parsed == City(name="Paris", country="France")
    assert again.id == made.id and again.output_text == answer


def test_input_images_on_a_vision_model(tmp_path):
    from tests.api.test_images import ANSWER, answer, data_url, grids, picture, vision_dir

    v11 = vision_dir(tmp_path / "v11-vision", "v11-tekken")
    url = data_url(picture(1, (50, 70)))
    with serve(v11, lambda p, sp, i: answer(v11)) as (client, fake):
        r = create(client, store=False, input=[{"role": "user", "content": [
            {"type": "input_text", "text": "What is in this image?"},
            {"type": "input_image", "image_url": url, "detail": "auto"}]}])
        prompt, _, request_id = fake.requests[-1]
        images = fake.images[request_id]
        bad = create(client, store=False, input=[{"role": "user", "content": [
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}]}])
    assert r.status_code == 200, r.text
    assert r.json()["output_text"] == ANSWER and grids(prompt) == [(3, 4)] and len(images) == 1
    assert r.json()["usage"]["input_tokens"] == len(prompt)
    assert_error(bad, 400, param="input[0].content[0]", code="invalid_image_format")


def test_stored_responses_are_readable_while_the_model_loads(tokenizer_dirs, store):
    """Reading and deleting need only the store: a restarting replica answers them at once."""
    import asyncio

    from fastapi.testclient import TestClient

    from server.app import create_app
    from server.model import load_model_info
    from server.settings import Settings
    from server.state import ServerState

    s = Script(tokenizer_dirs, "v3-spm")
    with serve(s.dir, lambda p, sp, i: s.ids("Saved."), responses_store=store) as (client, _):
        made = create(client, input="x").json()
    settings = Settings(model=str(s.dir), served_model_name=MODEL, responses_store=store)
    state = ServerState(settings=settings, model=load_model_info(settings), api_keys=[])

    async def never_loads():
        await asyncio.Event().wait()

    with TestClient(create_app(state, never_loads), raise_server_exceptions=False) as loading:
        got = loading.get(f"/v1/responses/{made['id']}")
        items = loading.get(f"/v1/responses/{made['id']}/input_items")
        new = loading.post("/v1/responses", json={"model": MODEL, "input": "y"})
        deleted = loading.delete(f"/v1/responses/{made['id']}")
        assert state.phase == "loading"
    assert got.status_code == 200 and got.json() == made
    assert items.status_code == 200
    assert_error(new, 503, code="model_loading")
    assert deleted.json()["deleted"] is True
