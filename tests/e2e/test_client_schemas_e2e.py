"""Schemas exactly as client libraries write them, on every tokenizer generation and both backends.

pydantic writes enums and nested models as ``$defs`` + ``$ref``; pre-v11 forced calls nest each
tool's schema inside the call-array schema (the bug: "Cannot find field $defs"). The random tiny
models must still produce output that validates against the schema the client sent, within a
modest token budget. Servers: v3 SentencePiece (xgrammar), v7 Tekken (pre-v11 calls, llguidance),
v11 and v13 Tekken (``[ARGS]`` calls, llguidance).
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import uuid
from typing import Literal, Optional

import httpx
import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, Field

from tests.api.harness import sse_events
from tests.spec import assert_error, assert_valid

pytestmark = pytest.mark.e2e

SERVERS = ["tiny_server", "v7_vision_server", "v11_server", "v13_server"]


class Priority(str, enum.Enum):
    low = "low"
    high = "high"


class Step(BaseModel):
    action: Literal["open", "close", 3]
    done: bool


class Ticket(BaseModel):
    """A support ticket."""

    priority: Priority
    level: int = Field(ge=1, le=5)
    owner: Optional[Literal["ops", "dev"]] = None
    steps: list[Step] = Field(min_length=1, max_length=2)


class Event(BaseModel):
    """Formats, a pattern and a const, as pydantic writes them. (No free-text fields such as an
    e-mail's local part or an open map's keys: a random model does not finish those within a
    token budget; tests/unit/test_tool_schemas.py covers their schemas.)"""

    kind: Literal["event"] = "event"
    day: dt.date
    at: Optional[dt.datetime] = None
    ident: uuid.UUID
    code: str = Field(pattern=r"^[A-Z]{3}$")


class Node(BaseModel):
    kind: Literal["leaf", "branch"]
    children: list["Node"] = Field(default_factory=list, max_length=2)


class ItemA(BaseModel):
    colour: Literal["red", "blue"]


class ItemB(BaseModel):
    size: int = Field(ge=0, le=9)


def _item_tool(name: str, model: type[BaseModel], item: str) -> dict:
    """A tool whose $defs call its item ``Item`` (two tools, same name, different meaning)."""
    schema = json.loads(json.dumps(model.model_json_schema()).replace(f"#/$defs/{item}", "#/$defs/Item"))
    schema["$defs"] = {"Item": schema["$defs"].pop(item)}
    return {"type": "function", "function": {"name": name, "description": name, "parameters": schema}}


class OrderA(BaseModel):
    item: ItemA


class OrderB(BaseModel):
    item: ItemB


def function(model: type[BaseModel], name: str) -> dict:
    return {"type": "function", "function": {"name": name, "description": model.__doc__ or name,
                                             "parameters": model.model_json_schema()}}


TOOLS = [function(Ticket, "file_ticket"), function(Node, "plant_tree"), function(Event, "log_event"),
         _item_tool("order_a", OrderA, "ItemA"), _item_tool("order_b", OrderB, "ItemB")]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}


def validator(schema: dict) -> Draft202012Validator:
    """A JSON Schema validator that checks formats too (date, date-time, email, uuid…)."""
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def model_id(server) -> str:
    return httpx.get(server.url + "/v1/models").json()["data"][0]["id"]


def post(server, body):
    return httpx.post(server.url + "/v1/chat/completions", json={"model": model_id(server), **body},
                      timeout=300)


def _calls(response, stream: bool) -> list[tuple[str, str]]:
    if not stream:
        data = response.json()
        assert_valid("CreateChatCompletionResponse", data)
        assert data["choices"][0]["finish_reason"] == "tool_calls", data
        return [(c["function"]["name"], c["function"]["arguments"])
                for c in data["choices"][0]["message"]["tool_calls"]]
    calls: dict[int, list[str]] = {}
    for chunk in sse_events(response)[:-1]:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
        for ch in chunk["choices"]:
            for d in ch["delta"].get("tool_calls") or []:
                entry = calls.setdefault(d["index"], ["", ""])
                entry[0] += d.get("function", {}).get("name") or ""
                entry[1] += d.get("function", {}).get("arguments") or ""
    return [(n, a) for n, a in calls.values()]


@pytest.mark.parametrize("server_name", SERVERS)
def test_forced_calls_validate_against_the_clients_schemas(request, server_name):
    """required / named / parallel or not, streaming and not: every call validates."""
    server = request.getfixturevalue(server_name)
    choices = [("required", True), ("required", False), ("file_ticket", False), ("plant_tree", True),
               ("order_b", False), ("log_event", False)]
    for i, (choice, parallel) in enumerate(choices):
        stream = i % 2 == 1
        tool_choice = choice if choice == "required" else {"type": "function", "function": {"name": choice}}
        body = {"messages": [{"role": "user", "content": "Do it."}], "tools": TOOLS,
                "tool_choice": tool_choice, "parallel_tool_calls": parallel, "temperature": 1.0,
                "seed": 10 + i, "max_tokens": 400, "stream": stream}
        calls = _calls(post(server, body), stream)
        assert calls and (parallel or len(calls) == 1), calls
        for name, arguments in calls:
            assert name in SCHEMAS and (choice == "required" or name == choice), name
            errors = list(validator(SCHEMAS[name]).iter_errors(json.loads(arguments)))
            assert not errors, (server_name, name, arguments, errors[0].message)


@pytest.mark.parametrize("server_name", SERVERS)
def test_response_formats_validate_against_the_clients_schema(request, server_name):
    server = request.getfixturevalue(server_name)
    for i, (model, field) in enumerate([(Ticket, "response_format"), (Node, "structured_outputs"),
                                        (Event, "response_format")]):
        schema = model.model_json_schema()
        fmt = ({"response_format": {"type": "json_schema", "json_schema": {"name": model.__name__, "schema": schema}}}
               if field == "response_format" else {"structured_outputs": {"json": schema}})
        for stream in (False, True):
            body = {"messages": [{"role": "user", "content": "JSON please."}], "temperature": 1.0,
                    "seed": 3 + i, "max_tokens": 400, "stream": stream, **fmt}
            r = post(server, body)
            assert r.status_code == 200, r.text
            if stream:
                content = "".join(c["delta"].get("content") or "" for e in sse_events(r)[:-1]
                                  for c in e["choices"])
            else:
                content = r.json()["choices"][0]["message"]["content"]
            assert not list(validator(schema).iter_errors(json.loads(content)))
            model.model_validate_json(content)  # and pydantic itself accepts it


def test_unenforceable_keywords_are_400s_naming_the_param(v11_server, tiny_server):
    not_schema = {"type": "object", "properties": {"a": {"not": {"type": "string"}}}}
    for server in (v11_server, tiny_server):
        err = assert_error(post(server, {"messages": [{"role": "user", "content": "x"}],
                                         "response_format": {"type": "json_schema", "json_schema": {
                                             "name": "n", "schema": not_schema}}}),
                           400, "response_format.json_schema.schema", "unsupported_schema_keyword")
        assert "'not'" in err["message"] and "#/properties/a/not" in err["message"]
        tools = [TOOLS[0], {"type": "function", "function": {"name": "u", "parameters": {
            "type": "object", "properties": {"xs": {"type": "array", "uniqueItems": True}}}}}]
        assert_error(post(server, {"messages": [{"role": "user", "content": "x"}], "tools": tools,
                                   "tool_choice": "required"}),
                     400, "tools[1].function.parameters", "unsupported_schema_keyword")
    # patternProperties: llguidance enforces it, xgrammar does not
    pattern = {"type": "object", "patternProperties": {"^k": {"type": "integer"}}}
    body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 40, "temperature": 1.0, "seed": 1,
            "structured_outputs": {"json": pattern}}
    assert post(v11_server, body).status_code == 200
    assert_error(post(tiny_server, body), 400, "structured_outputs.json", "unsupported_schema_keyword")
    # a pattern repeating more than 128 times: xgrammar (with vLLM's grammar cache) cannot compile
    # it, which was a 500 from the engine; llguidance can
    for count, tiny_status in ((128, 200), (200, 400)):
        body["structured_outputs"] = {"json": {"type": "object", "properties": {
            "s": {"type": "string", "pattern": f"^[a-z]{{0,{count}}}$"}}, "required": ["s"]}}
        assert post(v11_server, body).status_code == 200
        r = post(tiny_server, body)
        assert r.status_code == tiny_status, r.text
    err = assert_error(r, 400, "structured_outputs.json", "unsupported_schema_keyword")
    assert "{200}" in err["message"] and "#/properties/s/pattern" in err["message"]


# -- real clients --------------------------------------------------------------------------------
CLIENT_SERVERS = ["tiny_server", "v11_server"]


def _openai(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=300)


@pytest.mark.parametrize("server_name", CLIENT_SERVERS)
def test_openai_sdk_parse_and_pydantic_function_tool(request, server_name):
    import openai

    server = request.getfixturevalue(server_name)
    client, model = _openai(server), model_id(server)
    completion = client.chat.completions.parse(
        model=model, messages=[{"role": "user", "content": "File a ticket."}], response_format=Ticket,
        temperature=1.0, seed=4, max_tokens=400)
    assert isinstance(completion.choices[0].message.parsed, Ticket)
    completion = client.chat.completions.parse(
        model=model, messages=[{"role": "user", "content": "Order."}], temperature=1.0, seed=5,
        max_tokens=400, tools=[openai.pydantic_function_tool(OrderA), openai.pydantic_function_tool(Ticket)],
        tool_choice={"type": "function", "function": {"name": "Ticket"}})
    (call,) = completion.choices[0].message.tool_calls
    assert isinstance(call.function.parsed_arguments, Ticket)


@pytest.mark.parametrize("server_name", CLIENT_SERVERS)
def test_instructor_tools_and_json_schema_modes(request, server_name):
    instructor = pytest.importorskip("instructor")
    server = request.getfixturevalue(server_name)
    model = model_id(server)
    for mode in (instructor.Mode.TOOLS, instructor.Mode.JSON_SCHEMA):
        client = instructor.from_openai(_openai(server), mode=mode)
        ticket = client.chat.completions.create(
            model=model, response_model=Ticket, max_retries=0, temperature=1.0, seed=6,
            max_tokens=400, messages=[{"role": "user", "content": "File a ticket."}])
        assert isinstance(ticket, Ticket), mode


@pytest.mark.parametrize("server_name", CLIENT_SERVERS)
def test_langchain_with_structured_output(request, server_name):
    langchain_openai = pytest.importorskip("langchain_openai")
    server = request.getfixturevalue(server_name)
    llm = langchain_openai.ChatOpenAI(model=model_id(server), base_url=server.url + "/v1",
                                      api_key="unused", temperature=1.0, seed=7, max_tokens=400,
                                      max_retries=0, timeout=300)
    for method in ("function_calling", "json_schema"):
        out = llm.with_structured_output(Ticket, method=method).invoke("File a ticket.")
        assert isinstance(out, Ticket), method
