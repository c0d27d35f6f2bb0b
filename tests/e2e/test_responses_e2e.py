"""``/v1/responses`` on the real engine: tiny pre-v11 (v3) and v13 models, scripted outputs for
tool calls and reasoning, constrained output from the random model, the store shared by two
server processes (PostgreSQL), and the real clients: the OpenAI SDK, the OpenAI Agents SDK and
LangChain's ``ChatOpenAI(use_responses_api=True)``."""

from __future__ import annotations

import json

import httpx
import pytest
from jsonschema import validate
from openai import AsyncOpenAI, OpenAI
from pydantic import BaseModel, Field

from tests.api.test_responses import EVENT_SCHEMA, typed_events
from tests.e2e.conftest import MODEL, SCRIPTED, start_server, stop_server
from tests.e2e.test_tools_e2e import model_id, script, tokenizers  # noqa: F401 - fixture
from tests.pg import new_database
from tests.spec import assert_error, assert_valid_response

pytestmark = pytest.mark.e2e

WEATHER = {"type": "function", "name": "get_weather", "description": "Weather in a city.",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"], "additionalProperties": False}}


def create(server, **body):
    body.setdefault("model", model_id(server))
    return httpx.post(server.url + "/v1/responses", json=body, timeout=180)


def ok(response) -> dict:
    assert response.status_code == 200, response.text
    body = response.json()
    assert_valid_response("Response", body)
    return body


def test_text_json_stream_retrieve(tiny_server, tokenizers):
    ids = script(tokenizers("v3-spm"), "Paris is the capital of France.")
    body = ok(create(tiny_server, input="Capital of France?", vllm_xargs={"script": ids}))
    events = typed_events(create(tiny_server, input="Capital of France?", stream=True,
                                 vllm_xargs={"script": ids}))
    got = httpx.get(f"{tiny_server.url}/v1/responses/{body['id']}", timeout=30).json()
    items = httpx.get(f"{tiny_server.url}/v1/responses/{body['id']}/input_items", timeout=30).json()
    assert body["output_text"] == "Paris is the capital of France." and body["status"] == "completed"
    assert body["usage"]["output_tokens"] == len(ids) + 1  # + EOS
    assert "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta") == \
        body["output_text"]
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output_text"] == body["output_text"]
    assert got == body
    assert items["data"][0]["content"][0]["text"] == "Capital of France?"


@pytest.mark.parametrize("server_name, kind, call", [
    ("tiny_server", "v3-spm", ("[TOOL_CALLS]", '[{"name": "get_weather", "arguments": {"city": "Paris"}}]')),
    ("v13_server", "v13-tekken", ("[TOOL_CALLS]", "get_weather", "[ARGS]", '{"city": "Paris"}')),
])
def test_function_call_then_output(request, tokenizers, server_name, kind, call):
    server = request.getfixturevalue(server_name)
    tok = tokenizers(kind)
    first = ok(create(server, input="Weather in Paris?", tools=[WEATHER],
                      vllm_xargs={"script": script(tok, *call)}))
    (fc,) = first["output"]
    assert fc["type"] == "function_call" and fc["name"] == "get_weather"
    assert json.loads(fc["arguments"]) == {"city": "Paris"}
    answer = ok(create(server, previous_response_id=first["id"], tools=[WEATHER],
                       input=[{"type": "function_call_output", "call_id": fc["call_id"],
                               "output": '{"temperature_c": 18}'}],
                       vllm_xargs={"script": script(tok, "It is 18 degrees in Paris.")}))
    assert answer["output_text"] == "It is 18 degrees in Paris."
    assert answer["usage"]["input_tokens"] > first["usage"]["input_tokens"]  # the history is in
    events = typed_events(create(server, input="Weather in Paris?", tools=[WEATHER], stream=True,
                                 vllm_xargs={"script": script(tok, *call)}))
    done = next(e for e in events if e["type"] == "response.function_call_arguments.done")
    assert json.loads(done["arguments"]) == {"city": "Paris"}
    wrong = create(server, previous_response_id=first["id"], tools=[WEATHER], input=[
        {"type": "function_call_output", "call_id": "nope", "output": "x"}])
    assert_error(wrong, 400, param="input[0].call_id")


def test_reasoning_items_v13(v13_server, tokenizers):
    ids = script(tokenizers("v13-tekken"), "[THINK]", "Compare the tenths.", "[/THINK]", "9.8 is greater.")
    body = ok(create(v13_server, input="9.11 or 9.8?", vllm_xargs={"script": ids}))
    reasoning, message = body["output"]
    assert reasoning["type"] == "reasoning"
    assert reasoning["content"] == [{"type": "reasoning_text", "text": "Compare the tenths."}]
    assert message["content"][0]["text"] == "9.8 is greater." == body["output_text"]
    assert 0 < body["usage"]["output_tokens_details"]["reasoning_tokens"] < body["usage"]["output_tokens"]
    events = typed_events(create(v13_server, input="9.11 or 9.8?", stream=True, vllm_xargs={"script": ids}))
    assert "".join(e["delta"] for e in events if e["type"] == "response.reasoning_text.delta") == \
        "Compare the tenths."


CITY = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20},
                                         "population": {"type": "integer", "minimum": 0}},
        "required": ["name", "population"], "additionalProperties": False}


@pytest.mark.parametrize("server_name", ["tiny_server", "v13_server"])
def test_json_schema_from_the_random_model(request, server_name):
    server = request.getfixturevalue(server_name)
    for seed in (1, 2):
        body = ok(create(server, input="A city.", seed=seed, max_output_tokens=300, text={"format": {
            "type": "json_schema", "name": "city", "schema": CITY, "strict": True}}))
        validate(json.loads(body["output_text"]), CITY)


def test_bad_inputs_keep_the_server_serving(tiny_server):
    assert_error(create(tiny_server, input=[{"type": "computer_call", "id": "x"}]), 400,
                 param="input[0].type")
    assert_error(create(tiny_server, input="x", tools=[{"type": "web_search"}]), 400, param="tools[0].type")
    assert_error(create(tiny_server, input="x", previous_response_id="resp_nope"), 404,
                 param="previous_response_id")
    assert_error(create(tiny_server, input="x", text={"format": {
        "type": "json_schema", "name": "n", "schema": {"type": "object", "not": {}}}}), 400,
        param="text.format.schema")
    assert ok(create(tiny_server, input="still there?", max_output_tokens=4))["status"] == "incomplete"


def test_two_processes_share_one_postgres_store(pool, postgres_url, tokenizers):
    """Two replicas, one PostgreSQL: either continues, reads or deletes what the other made."""
    url = new_database(postgres_url)
    pool.make_room(2)
    args = ["--served-model-name", MODEL, *SCRIPTED]
    env = {"MSERVE_RESPONSES_STORE": url, "MSERVE_API_KEYS": "k1,k2"}
    a = start_server("responses-pg-a", args, env=env)
    try:
        b = start_server("responses-pg-b", args, env=env)
        try:
            tok = tokenizers("v3-spm")
            k1 = {"Authorization": "Bearer k1"}
            first = httpx.post(a.url + "/v1/responses", headers=k1, timeout=180, json={
                "model": MODEL, "input": "My name is Ada.",
                "vllm_xargs": {"script": script(tok, "Hello Ada.")}})
            assert first.status_code == 200, first.text
            first = first.json()
            second = httpx.post(b.url + "/v1/responses", headers=k1, timeout=180, json={
                "model": MODEL, "input": "What is my name?", "previous_response_id": first["id"],
                "vllm_xargs": {"script": script(tok, "Your name is Ada.")}})
            other_key = httpx.get(f"{b.url}/v1/responses/{first['id']}", timeout=30,
                                  headers={"Authorization": "Bearer k2"})
            deleted = httpx.delete(f"{b.url}/v1/responses/{first['id']}", headers=k1, timeout=30)
            gone = httpx.get(f"{a.url}/v1/responses/{first['id']}", headers=k1, timeout=30)
            chained = httpx.get(f"{a.url}/v1/responses/{second.json()['id']}", headers=k1, timeout=30)
        finally:
            stop_server(b)
    finally:
        stop_server(a)
    body = ok(second)
    assert body["previous_response_id"] == first["id"] and body["output_text"] == "Your name is Ada."
    assert body["usage"]["input_tokens"] > first["usage"]["input_tokens"]
    assert_error(other_key, 404)
    assert deleted.json()["deleted"] is True
    assert_error(gone, 404)
    assert chained.status_code == 200


class City(BaseModel):
    # keeps a random model's string short; a pattern, as xgrammar lets control characters into a
    # maxLength string (README, "Structured outputs": measured here, a \x18 pydantic refused)
    name: str = Field(pattern=r"^[^\x00-\x1f]{1,12}$")
    population: int = Field(ge=0, le=10**6)


def test_openai_sdk_create_stream_parse(tiny_server, tokenizers):
    oai = OpenAI(base_url=tiny_server.url + "/v1", api_key="none", max_retries=0)
    ids = script(tokenizers("v3-spm"), "Bonjour.")
    made = oai.responses.create(model=MODEL, input="Say hello in French.",
                                extra_body={"vllm_xargs": {"script": ids}})
    with oai.responses.stream(model=MODEL, input="Say hello in French.",
                              extra_body={"vllm_xargs": {"script": ids}}) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    parsed = oai.responses.parse(model=MODEL, input="A city.", text_format=City, max_output_tokens=300)
    assert made.output_text == "Bonjour." == final.output_text
    assert set(kinds) <= set(EVENT_SCHEMA) and kinds[-1] == "response.completed"
    assert isinstance(parsed.output_parsed, City)
    assert oai.responses.retrieve(made.id).output_text == "Bonjour."


class _Scripted(httpx.AsyncBaseTransport):
    """Puts the next token script into each Responses request (what the model will 'say')."""

    def __init__(self, scripts: list[list[int]]) -> None:
        self.scripts = scripts
        self.bodies: list[dict] = []
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(await request.aread())
        body["vllm_xargs"] = {"script": self.scripts.pop(0)}
        self.bodies.append(body)
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        rebuilt = httpx.Request(request.method, request.url, headers=headers, json=body)
        return await self.inner.handle_async_request(rebuilt)


def test_agents_sdk_tool_agent_over_two_turns(v13_server, tokenizers):
    agents = pytest.importorskip("agents")
    agents.set_tracing_disabled(True)
    tok = tokenizers("v13-tekken")
    transport = _Scripted([
        script(tok, "[TOOL_CALLS]", "get_weather", "[ARGS]", '{"city": "Paris"}'),
        script(tok, "It is sunny in Paris."),
        script(tok, "[THINK]", "They asked before.", "[/THINK]", "Still sunny."),
    ])
    seen: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """Weather in a city."""
        seen.append(city)
        return f"sunny in {city}"

    client = AsyncOpenAI(base_url=v13_server.url + "/v1", api_key="none", max_retries=0,
                         http_client=httpx.AsyncClient(transport=transport, timeout=180))
    model = agents.OpenAIResponsesModel(model=model_id(v13_server), openai_client=client)
    agent = agents.Agent(name="weather", instructions="Answer with the tool.", tools=[get_weather],
                         model=model)
    first = agents.Runner.run_sync(agent, "Weather in Paris?")
    second = agents.Runner.run_sync(agent, "And now?", previous_response_id=first.last_response_id)
    assert seen == ["Paris"]
    assert first.final_output == "It is sunny in Paris."
    assert second.final_output == "Still sunny."
    outputs = [i for i in transport.bodies[1]["input"] if i.get("type") == "function_call_output"]
    assert [o["output"] for o in outputs] == ["sunny in Paris"]  # the tool's result went back
    assert transport.bodies[2]["previous_response_id"] == first.last_response_id


def test_langchain_use_responses_api(tiny_server, tokenizers):
    from langchain_openai import ChatOpenAI

    ids = script(tokenizers("v3-spm"), "Hello from LangChain.")
    llm = ChatOpenAI(base_url=tiny_server.url + "/v1", api_key="none", model=MODEL,
                     use_responses_api=True, max_retries=0,
                     extra_body={"vllm_xargs": {"script": ids}})
    msg = llm.invoke("Say hello.")
    chunks = list(llm.stream("Say hello."))
    assert msg.text == "Hello from LangChain."
    assert "".join(c.text for c in chunks) == "Hello from LangChain."
    structured = ChatOpenAI(base_url=tiny_server.url + "/v1", api_key="none", model=MODEL,
                            use_responses_api=True, max_retries=0).with_structured_output(
        City, method="json_schema")
    assert isinstance(structured.invoke("A city."), City)
