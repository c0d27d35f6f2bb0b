"""Client-library schemas through the app: what reaches the engine, and what is refused."""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator

from tests.api.harness import MODEL, serve
from tests.spec import assert_error

ITEM_A = {"$defs": {"Item": {"type": "object", "properties": {"sku": {"type": "string"}},
                             "required": ["sku"]}},
          "type": "object", "properties": {"item": {"$ref": "#/$defs/Item"}}, "required": ["item"]}
ITEM_B = {"$defs": {"Item": {"type": "object", "properties": {"kg": {"type": "number"}},
                             "required": ["kg"]}},
          "type": "object", "properties": {"item": {"$ref": "#/$defs/Item"}}, "required": ["item"]}


def tool(name, parameters):
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


def forced(client, fake, tools, choice="required"):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "tools": tools,
            "tool_choice": choice}
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return fake.requests[-1][1].constraint


def test_same_defs_names_in_two_tools_do_not_collide(tokenizer_dirs):
    with serve(tokenizer_dirs["v3-spm"], lambda p, s, i: [2]) as (client, fake):
        both = forced(client, fake, [tool("a", ITEM_A), tool("b", ITEM_B)])
        only_b = forced(client, fake, [tool("a", ITEM_A), tool("b", ITEM_B)],
                        {"type": "function", "function": {"name": "b"}})
    validator = Draft202012Validator(both.value)
    assert validator.is_valid([{"name": "a", "arguments": {"item": {"sku": "x"}}},
                               {"name": "b", "arguments": {"item": {"kg": 1.5}}}])
    assert not validator.is_valid([{"name": "a", "arguments": {"item": {"kg": 1.5}}}])
    assert not validator.is_valid([{"name": "b", "arguments": {"item": {"sku": "x"}}}])
    named = Draft202012Validator(only_b.value)
    assert named.is_valid([{"name": "b", "arguments": {"item": {"kg": 2}}}])
    assert not named.is_valid([{"name": "a", "arguments": {"item": {"sku": "x"}}}])


def test_v11_grammar_embeds_each_schema_whole_and_closed(tokenizer_dirs):
    with serve(tokenizer_dirs["v11-tekken"], lambda p, s, i: [2]) as (client, fake):
        grammar = forced(client, fake, [tool("a", ITEM_A), tool("b", ITEM_B)]).value
    schemas = [json.loads(line.split("%json ", 1)[1]) for line in grammar.splitlines() if "%json" in line]
    assert [s["$defs"]["Item"]["properties"] for s in schemas] == [{"sku": {"type": "string"}},
                                                                   {"kg": {"type": "number"}}]
    assert all(s["additionalProperties"] is False and s["$defs"]["Item"]["additionalProperties"] is False
               for s in schemas)


@pytest.mark.parametrize("kind,keyword,allowed", [
    ("v3-spm", "not", False), ("v11-tekken", "not", False),
    ("v3-spm", "patternProperties", False), ("v11-tekken", "patternProperties", True),
    ("v3-spm", "uniqueItems", False), ("v11-tekken", "uniqueItems", False),
])
def test_unenforceable_keywords_name_the_param(tokenizer_dirs, kind, keyword, allowed):
    inner = {"not": {"not": {"type": "integer"}},
             "patternProperties": {"patternProperties": {"^k": {"type": "integer"}}, "type": "object"},
             "uniqueItems": {"type": "array", "uniqueItems": True}}[keyword]
    schema = {"type": "object", "properties": {"x": inner}, "required": ["x"]}
    bodies = {
        "response_format.json_schema.schema": {"response_format": {"type": "json_schema", "json_schema": {
            "name": "s", "schema": schema}}},
        "structured_outputs.json": {"structured_outputs": {"json": schema}},
        "tools[1].function.parameters": {"tools": [tool("ok", ITEM_A), tool("bad", schema)],
                                         "tool_choice": "required"},
    }
    with serve(tokenizer_dirs[kind], lambda p, s, i: [2]) as (client, fake):
        for param, extra in bodies.items():
            r = client.post("/v1/chat/completions",
                            json={"model": MODEL, "messages": [{"role": "user", "content": "x"}], **extra})
            if allowed:
                assert r.status_code == 200, r.text
            else:
                err = assert_error(r, 400, param, "unsupported_schema_keyword")
                assert f"'{keyword}'" in err["message"] and "#/properties/x/" in err["message"]
        # shown to the model only (tool_choice auto): nothing to enforce, no refusal
        r = client.post("/v1/chat/completions", json={
            "model": MODEL, "messages": [{"role": "user", "content": "x"}], "tools": [tool("bad", schema)]})
        assert r.status_code == 200, r.text


PYDANTIC_LIKE = {"$defs": {"Colour": {"enum": ["red", "blue"], "title": "Colour", "type": "string"},
                           "Node": {"type": "object", "properties": {
                               "colour": {"$ref": "#/$defs/Colour"},
                               "kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}, "default": []}},
                               "required": ["colour"], "title": "Node"}},
                 "type": "object", "properties": {"root": {"$ref": "#/$defs/Node"},
                                                  "note": {"anyOf": [{"type": "string"}, {"type": "null"}],
                                                           "default": None}},
                 "required": ["root"], "title": "Tree"}


@pytest.mark.parametrize("kind", ["v3-spm", "v7-spm", "v3-tekken", "v7-tekken", "v11-tekken", "v13-tekken"])
@pytest.mark.parametrize("choice", ["required", "named"])
def test_every_generation_builds_a_constraint_its_backend_compiles(tokenizer_dirs, kind, choice):
    import llguidance
    import xgrammar as xgr

    tools = [tool("grow", PYDANTIC_LIKE), tool("order", ITEM_A)]
    tool_choice = "required" if choice == "required" else {"type": "function", "function": {"name": "grow"}}
    with serve(tokenizer_dirs[kind], lambda p, s, i: [2]) as (client, fake):
        constraint = forced(client, fake, tools, tool_choice)
    if constraint.kind == "grammar":  # v11+: Lark for llguidance, each schema embedded whole
        assert kind in ("v11-tekken", "v13-tekken")
        error = llguidance.LLMatcher.validate_grammar(llguidance.grammar_from("lark", constraint.value))
    else:  # pre-v11: the call array's JSON schema
        text = json.dumps(constraint.value)
        if kind.endswith("spm"):
            xgr.Grammar.from_json_schema(text, any_whitespace=False)
            error = ""
        else:
            error = llguidance.LLMatcher.validate_grammar(llguidance.grammar_from("json_schema", text))
        call = {"name": "grow", "arguments": {"root": {"colour": "red", "kids": [{"colour": "blue"}]}}}
        assert Draft202012Validator(constraint.value).is_valid([call])
    assert error == "", error
