"""Schemas as client libraries write them (pydantic: ``$defs`` + ``$ref``, recursion, unions…),
inside the forced-call constraints, compiled by both structured-output backends.

The pre-v11 forced-call schema nests every tool's parameter schema inside the call array's
schema; the references pydantic writes point at the tool schema's root and must keep resolving
there (``server/chat/refs.py``).
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import uuid
from typing import Any, Literal, Optional, Union

import llguidance
import pytest
import xgrammar as xgr
from jsonschema import Draft202012Validator
from pydantic import BaseModel, Field

from server.chat.enforce import closed_objects
from server.chat.refs import pointer, relocate
from server.chat.tools import pre_v11_schema
from server.protocol import Tool


class Colour(str, enum.Enum):
    red = "red"
    blue = "blue"


class Level(enum.IntEnum):
    low = 1
    high = 2


class Address(BaseModel):
    street: str = Field(description="Street and number", max_length=80)
    city: str
    zip: Optional[str] = Field(None, pattern=r"^[0-9]{5}$")


class Person(BaseModel):
    """A person with addresses."""

    name: str = Field(min_length=1)
    age: int = Field(ge=0, le=150)
    colour: Colour = Colour.red
    level: Level
    tag: Literal["a", "b", 3]
    addresses: list[Address] = Field(min_length=1, max_length=3)
    boss: Optional["Person"] = None
    email: Optional[str] = Field(None, json_schema_extra={"format": "email"})
    born: Optional[dt.date] = None
    seen: Optional[dt.datetime] = None
    ident: Optional[uuid.UUID] = None
    score: Union[int, float, None] = None
    extra: dict[str, int] = Field(default_factory=dict)


class Tree(BaseModel):
    value: int
    children: list["Tree"] = []


class ItemA(BaseModel):
    sku: str


class ItemB(BaseModel):
    weight: float


class OrderA(BaseModel):
    item: ItemA


class OrderB(BaseModel):
    item: ItemB


def _rename_item(schema: dict[str, Any], name: str) -> dict[str, Any]:
    """Two tools whose $defs both say ``Item`` with different meanings."""
    text = json.dumps(schema).replace(f'"#/$defs/{name}"', '"#/$defs/Item"')
    out = json.loads(text)
    out["$defs"] = {"Item": out["$defs"].pop(name)}
    return out


def definitions_style(schema: dict[str, Any]) -> dict[str, Any]:
    """The draft-07 spelling (``definitions``), as older generators write it."""
    text = json.dumps(schema).replace('"#/$defs/', '"#/definitions/')
    out = json.loads(text)
    out["definitions"] = out.pop("$defs")
    return out


def tool(name: str, parameters: dict[str, Any]) -> Tool:
    return Tool.model_validate({"type": "function", "function": {"name": name, "parameters": parameters}})


PERSON = Person.model_json_schema()
TREE = Tree.model_json_schema()
ORDER_A, ORDER_B = _rename_item(OrderA.model_json_schema(), "ItemA"), _rename_item(OrderB.model_json_schema(), "ItemB")

PERSON_OK = {"name": "Ada", "age": 36, "level": 2, "tag": 3, "colour": "blue",
             "addresses": [{"street": "1 Main St", "city": "Paris", "zip": "75001"}],
             "boss": {"name": "Bo", "age": 60, "level": 1, "tag": "a",
                      "addresses": [{"street": "2", "city": "Lyon"}]},
             "born": "1990-01-31", "score": 1.5, "extra": {"k": 1}}
PERSON_BAD = {**PERSON_OK, "colour": "green"}
TREE_OK = {"value": 1, "children": [{"value": 2, "children": [{"value": 3}]}]}
TREE_BAD = {"value": 1, "children": [{"value": "two"}]}


def forced(tools: list[Tool]) -> list[tuple[Tool, dict[str, Any]]]:
    """(tool, the parameter schema generated with), as plan_tools hands them over."""
    return [(t, closed_objects(t.function.parameters)) for t in tools]


def calls(*pairs: tuple[str, Any]) -> list[dict[str, Any]]:
    return [{"name": n, "arguments": a} for n, a in pairs]


CASES = {
    "pydantic $defs": ([tool("add_person", PERSON)], calls(("add_person", PERSON_OK)),
                       calls(("add_person", PERSON_BAD))),
    "definitions": ([tool("add_person", definitions_style(PERSON))], calls(("add_person", PERSON_OK)),
                    calls(("add_person", PERSON_BAD))),
    "recursive": ([tool("plant", TREE)], calls(("plant", TREE_OK)), calls(("plant", TREE_BAD))),
    "same $defs names": ([tool("order_a", ORDER_A), tool("order_b", ORDER_B)],
                         calls(("order_a", {"item": {"sku": "x"}}), ("order_b", {"item": {"weight": 2.0}})),
                         calls(("order_a", {"item": {"weight": 2.0}}))),
    "root recursion": ([tool("nest", {"type": "object", "properties": {
        "child": {"anyOf": [{"$ref": "#"}, {"type": "null"}]}}, "required": ["child"],
        "additionalProperties": False})],
        calls(("nest", {"child": {"child": None}})), calls(("nest", {"child": {"child": 1}}))),
    "nested $defs": ([tool("deep", {"$defs": {"Outer": {"$defs": {"Inner": {"enum": [1, 2]}},
                                                        "type": "object", "properties": {
                                                            "x": {"$ref": "#/$defs/Outer/$defs/Inner"}}}},
                                    "type": "object", "properties": {"o": {"$ref": "#/$defs/Outer"}},
                                    "required": ["o"]})],
                     calls(("deep", {"o": {"x": 2}})), calls(("deep", {"o": {"x": 3}}))),
    "const data untouched": ([tool("c", {"type": "object", "properties": {
        "k": {"const": {"$ref": "#/$defs/X"}}}, "required": ["k"]})],
        calls(("c", {"k": {"$ref": "#/$defs/X"}})), calls(("c", {"k": {"$ref": "#/x"}}))),
}


@pytest.mark.parametrize("parallel", [True, False])
@pytest.mark.parametrize("case", list(CASES))
def test_pre_v11_call_array_keeps_every_reference(case, parallel):
    tools, good, bad = CASES[case]
    schema = pre_v11_schema(forced(tools), parallel=parallel)
    validator = Draft202012Validator(schema)
    if parallel or len(good) == 1:
        assert not list(validator.iter_errors(good)), case
    else:
        assert list(validator.iter_errors(good))  # two calls where one is allowed
        assert not list(validator.iter_errors(good[:1]))
    assert list(validator.iter_errors(bad)), case
    # both engines' structured-output backends compile it (the bug: "Cannot find field $defs")
    text = json.dumps(schema)
    xgr.Grammar.from_json_schema(text)
    assert llguidance.LLMatcher.validate_grammar(llguidance.grammar_from("json_schema", text)) == ""


def test_xgrammar_accepts_exactly_the_valid_calls():
    tools, good, bad = CASES["same $defs names"]
    grammar = xgr.Grammar.from_json_schema(json.dumps(pre_v11_schema(forced(tools), parallel=True)),
                                           any_whitespace=False)
    from xgrammar.testing import _is_grammar_accept_string

    # xgrammar's "no free whitespace" JSON is json.dumps' default spacing
    assert _is_grammar_accept_string(grammar, json.dumps(good))
    assert _is_grammar_accept_string(grammar, json.dumps(good[1:]))
    assert not _is_grammar_accept_string(grammar, json.dumps(bad))


def test_relocate_rewrites_local_refs_only():
    schema = {"$defs": {"A": {"type": "string"}}, "properties": {
        "a": {"$ref": "#/$defs/A"}, "self": {"$ref": "#"}, "remote": {"$ref": "https://x/y.json"},
        "$ref": {"type": "integer"}}, "default": {"$ref": "#/$defs/A"}}
    out = relocate(schema, pointer("items", "anyOf", 0, "properties", "arguments"))
    base = "#/items/anyOf/0/properties/arguments"
    assert out["properties"]["a"] == {"$ref": base + "/$defs/A"}
    assert out["properties"]["self"] == {"$ref": base}
    assert out["properties"]["remote"] == {"$ref": "https://x/y.json"}
    assert out["properties"]["$ref"] == {"type": "integer"}  # a property named "$ref"
    assert out["default"] == {"$ref": "#/$defs/A"}  # data
    assert pointer("a/b", "c~d") == "#/a~1b/c~0d"
    # names in $defs are names: a definition called "default" is a schema like any other
    named = relocate({"$defs": {"default": {"$ref": "#/$defs/enum"}, "enum": {"type": "string"}}},
                     pointer("$defs", "arguments_0"))
    assert named["$defs"]["default"] == {"$ref": "#/$defs/arguments_0/$defs/enum"}


def test_closed_objects_close_what_is_open_and_nothing_else():
    from server.chat.enforce import closed_objects

    schema = {"type": "object", "properties": {
        "open": {"type": "object", "properties": {"a": {"type": "integer"}}},
        "said": {"type": "object", "properties": {"a": {}}, "additionalProperties": True},
        "map": {"type": "object", "additionalProperties": {"type": "integer"}},
        "merged": {"allOf": [{"properties": {"a": {}}}, {"properties": {"b": {}}}]},
        "data": {"const": {"properties": {"x": 1}}}},
        "$defs": {"D": {"properties": {"z": {}}}}}
    out = closed_objects(schema)
    p = out["properties"]
    assert out["additionalProperties"] is False and p["open"]["additionalProperties"] is False
    assert p["said"]["additionalProperties"] is True and "additionalProperties" not in p["map"]["additionalProperties"]
    assert all("additionalProperties" not in part for part in p["merged"]["allOf"])
    assert p["data"] == schema["properties"]["data"] and out["$defs"]["D"]["additionalProperties"] is False
    assert "additionalProperties" not in schema  # a copy


def test_unenforced_finds_keywords_where_they_are_and_ignores_data():
    from server.chat.enforce import unenforced

    assert unenforced({"properties": {"a/b": {"items": [{"not": {}}]}}}, "guidance") == ("not", "#/properties/a~1b/items/0/not")
    assert unenforced({"const": {"not": 1}, "enum": [{"if": 1}], "default": {"contains": 1}}, "xgrammar") is None
    assert unenforced({"properties": {"not": {"type": "string"}}}, "xgrammar") is None  # a property named "not"
    assert unenforced({"allOf": [{"type": "object"}]}, "xgrammar") is None
    assert unenforced({"allOf": [{}, {}]}, "xgrammar") == ("allOf", "#/allOf")
    assert unenforced({"allOf": [{}, {}]}, "guidance") is None
    assert unenforced({"uniqueItems": False}, "guidance") is None
    assert unenforced({"$ref": "https://example.com/s.json"}, "guidance")[0].startswith("$ref")


def test_xgrammar_string_combinations_it_drops_are_named():
    from server.chat.enforce import unenforced

    url = {"type": "string", "format": "uri", "minLength": 1, "maxLength": 2083}  # pydantic HttpUrl
    assert unenforced({"properties": {"u": url}}, "xgrammar") == ("maxLength' together with 'format", "#/properties/u")
    assert unenforced({"properties": {"u": url}}, "guidance") is None
    assert unenforced({"type": "string", "format": "email", "minLength": 1}, "xgrammar") is None
    assert unenforced({"type": "string", "pattern": "^a+$", "maxLength": 3}, "xgrammar")[0] == "maxLength' together with 'pattern"
    assert unenforced({"type": "string", "pattern": "^a", "format": "email"}, "xgrammar")[0] == "pattern' together with 'format"
    assert unenforced({"type": "string", "maxLength": 3}, "xgrammar") is None
    long = {"properties": {"s": {"type": "string", "pattern": "^(ab){129,}$"}}}
    assert unenforced(long, "xgrammar") == ("{129}' (above 128) in 'pattern", "#/properties/s/pattern")
    assert unenforced(long, "guidance") is None
    for fine in ("^.{0,128}$", r"^\{500\}$", "^[{500}]$", "^[]{500}]$"):  # escaped, in a class
        assert unenforced({"type": "string", "pattern": fine}, "xgrammar") is None, fine
    # the combinations that are refused are the ones xgrammar really drops
    from xgrammar.testing import _is_grammar_accept_string

    grammar = xgr.Grammar.from_json_schema(json.dumps({"type": "string", "pattern": "^a+$", "maxLength": 3}),
                                           any_whitespace=False)
    assert _is_grammar_accept_string(grammar, '"aaaaaa"')  # if xgrammar learns it, relax the rule
    compiler = xgr.GrammarCompiler(xgr.TokenizerInfo(["a", "b", "{", "}"]), cache_enabled=True)
    compiler.compile_json_schema(json.dumps({"type": "string", "pattern": "^a{0,128}$"}))
    with pytest.raises(RuntimeError):  # as vLLM compiles it; if xgrammar learns it, relax the rule
        compiler.compile_json_schema(json.dumps({"type": "string", "pattern": "^a{0,129}$"}))


def test_what_generation_uses_is_remembered_per_schema_and_key_order():
    from server.chat.enforce import for_generation

    schema = {"type": "object", "properties": {"b": {"type": "integer"}, "a": {"type": "string"}}}
    first = for_generation(schema, "guidance", "p")
    assert for_generation(json.loads(json.dumps(schema)), "guidance", "p") is first  # a repeat: looked up
    reordered = for_generation({"type": "object", "properties": {"a": {"type": "string"},
                                                                  "b": {"type": "integer"}}}, "guidance", "p")
    assert list(reordered["properties"]) == ["a", "b"]  # generated in the client's order
    assert first["additionalProperties"] is False and "additionalProperties" not in schema
    with pytest.raises(Exception, match="uniqueItems") as caught:
        for_generation({"type": "array", "uniqueItems": True}, "xgrammar", "tools[3].function.parameters")
    assert caught.value.param == "tools[3].function.parameters"
    with pytest.raises(Exception) as again:  # a remembered refusal names the new request's param
        for_generation({"type": "array", "uniqueItems": True}, "xgrammar", "structured_outputs.json")
    assert again.value.param == "structured_outputs.json"
