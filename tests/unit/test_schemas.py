"""Schema checks: the merged 2020-12 meta-schema agrees with jsonschema; tools are checked once."""

from __future__ import annotations

import pytest
from jsonschema import Draft7Validator, Draft202012Validator, SchemaError
from mistral_common.exceptions import InvalidToolSchemaException
from mistral_common.protocol.instruct.request import ChatCompletionRequest

from server.chat import schemas
from server.protocol import parse_request
from tests.conftest import tokenizer_for


def _big() -> dict:
    inner = {f"f{j}": {"type": "string", "enum": [f"v{j}{k}" for k in range(6)]} for j in range(12)}
    obj = {"type": "object", "properties": inner, "required": list(inner), "additionalProperties": False}
    return {"type": "object", "properties": {f"o{i}": obj for i in range(25)}}


CASES = [
    {}, {"type": "object"}, _big(),
    {"type": "object", "properties": {"a": {"$ref": "#/$defs/x"}}, "$defs": {"x": {"type": "string"}}},
    {"prefixItems": [{"type": "integer"}], "items": False}, {"pattern": "^a+$"},
    {"anyOf": [{"type": "null"}, {"type": "array", "items": {"enum": [1, "a", None]}}]},
    {"if": {"minimum": 0}, "then": {"multipleOf": 2}, "else": {"maximum": 10}},
    {"dependentRequired": {"a": ["b"]}, "dependentSchemas": {"a": {"required": ["c"]}}},
    {"unevaluatedProperties": False, "contentSchema": {"type": "string"}, "deprecated": True},
    {"definitions": {"a": {"type": "string"}}, "dependencies": {"a": ["b"]}},
    {"$id": "https://example.com/s", "$anchor": "root", "format": "email", "const": 3},
    # invalid
    {"type": "objekt"}, {"type": ["string", "string"]}, {"properties": 5}, {"items": [1]},
    {"prefixItems": 5}, {"$defs": {"a": {"type": 3}}}, {"properties": {"a": {"minimum": "x"}}},
    {"anyOf": []}, {"required": [1]}, {"enum": 3}, {"pattern": "("}, {"minLength": -1},
    {"multipleOf": 0}, {"$anchor": "1bad"}, {"unevaluatedProperties": 3}, {"contentSchema": 4},
    {"dependentRequired": {"a": [1]}}, {"deprecated": "yes"}, {"if": 3}, {"not": []}, {"format": 5},
    {"definitions": {"a": 5}}, {"dependencies": {"a": ["b", 1]}},
    {"type": "object", "properties": {"deep": {"properties": {"deeper": {"items": {"type": "nope"}}}}}},
]


def _reference(schema) -> str | None:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        return exc.message
    return None


@pytest.mark.parametrize("schema", CASES, ids=range(len(CASES)))
def test_same_verdict_as_jsonschema(schema):
    expected = _reference(schema)
    got = schemas._outcome(schema)
    assert (got is None) == (expected is None), (got, expected)
    if expected is not None and "valid under any" not in expected:  # anyOf: may name the branch
        assert got == expected


def _nested(depth: int) -> dict:
    schema: dict = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def test_schemas_too_deep_for_orjson_still_have_a_digest():
    deep = _nested(130)  # valid, but deeper than orjson serialises (255 containers)
    key = schemas.digest(deep)
    assert key is not None and schemas.digest(_nested(130)) == key != schemas.digest(_nested(131))
    assert schemas.problem(deep) is None
    assert b"valid" + key in schemas._memory


def test_the_memory_is_bounded_in_bytes_and_forgets_the_least_recently_used():
    memory = schemas.Memory(budget=1000)
    for key in (b"a", b"b", b"c"):
        memory.keep(key, key, cost=300)
    assert memory.recall(b"a") == (True, b"a")  # `b` is now the least recently used
    memory.keep(b"d", b"d", cost=300)
    assert [k for k in (b"a", b"b", b"c", b"d") if k in memory] == [b"a", b"c", b"d"]
    assert memory.used == 900
    memory.keep(b"huge", b"huge", cost=1001)  # more than the whole budget: not kept at all
    assert b"huge" not in memory and len(memory) == 3


def test_refused_schemas_are_not_remembered():
    before = len(schemas._memory)
    for i in range(50):
        assert schemas.problem({"type": f"objekt-{i}"}) is not None
    assert len(schemas._memory) == before


def test_a_schema_nested_beyond_recursion_is_refused_not_crashed():
    schema: dict = {}
    for _ in range(5000):
        schema = {"not": schema}
    assert schemas.problem(schema) == "the schema is nested too deeply"


def _encode(tokenizer, parameters: dict, name: str = "fill") -> list[int]:
    """Encode as the renderer does: the request's schema digests known while encoding."""
    body = {"messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": name, "parameters": parameters}}]}
    ours = parse_request(body)
    with schemas.known_tools(ours):
        return tokenizer.encode_chat_completion(ChatCompletionRequest(**body)).tokens


@pytest.mark.parametrize("kind", ["v3-spm", "v11-tekken"])
def test_mistral_common_checks_each_tool_once(tokenizer_dirs, monkeypatch, kind):
    tokenizer = tokenizer_for(tokenizer_dirs[kind])
    plain = _encode(tokenizer, {"type": "object"})  # before any change: the reference tokens
    schemas.remember_tool_checks(tokenizer)
    checked: list[dict] = []
    original = Draft7Validator.check_schema.__func__

    def spy(cls, schema, *args, **kwargs):
        checked.append(schema)
        return original(cls, schema, *args, **kwargs)

    monkeypatch.setattr(Draft7Validator, "check_schema", classmethod(spy))
    params = {"type": "object", "properties": {"a": {"type": "string"}}}
    first = _encode(tokenizer, params)
    assert _encode(tokenizer, params) == first
    assert len(checked) == 1
    _encode(tokenizer, dict(reversed(params.items())))  # other key order: another digest
    _encode(tokenizer, params, name="other")  # another name: checked
    _encode(tokenizer, {**params, "required": ["a"]})  # another schema: checked
    assert len(checked) == 4
    assert _encode(tokenizer, {"type": "object"}) == plain  # tokens are unchanged
    assert len(checked) == 5
    for _ in range(2):  # a bad schema is refused every time, never remembered
        with pytest.raises(InvalidToolSchemaException):
            _encode(tokenizer, {"type": "objekt"})
    assert len(checked) == 7
