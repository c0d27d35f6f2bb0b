"""What a response stores, checked before generating (server/responses/budget.py), and the
canonical item shapes it stores (server/responses/items.py): pure, no engine, no store."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from server.errors import InvalidRequest
from server.responses import budget
from server.responses.items import canonical_input
from server.responses.protocol import parse_responses_request
from tests.spec import assert_valid_response

SKELETON = {"id": "resp_1", "object": "response", "instructions": None, "tools": [],
            "text": {"format": {"type": "text"}}, "tool_choice": "auto", "metadata": {}}


def nested(levels: int, leaf: Any = 1) -> Any:
    for _ in range(levels):
        leaf = [leaf]
    return leaf


def refused(items: list[dict[str, Any]], skeleton: dict[str, Any] = SKELETON,
            limit: tuple[int, str] | None = (10**6, "responses_max_record_bytes"),
            text_input: bool = False) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        budget.check(items, skeleton, limit, text_input)
    return info.value


def test_the_items_json_is_what_orjson_writes() -> None:
    items = [{"id": "msg_1", "type": "message", "content": [{"type": "input_text", "text": "ü"}]},
             {"id": "fc_1", "type": "function_call", "arguments": "{}"}]
    assert budget.check(items, SKELETON, (10**6, "x")) == orjson.dumps(items)
    assert budget.check(items, SKELETON, None) is None  # not kept: nothing to encode


@pytest.mark.parametrize("item, param, code", [
    ({"id": "m", "content": [{"type": "input_text", "text": nested(300)}]},
     "input[0].content", "json_too_deep"),
    ({"id": "m", "content": [{"type": "input_text", "text": "bad \ud800 text"}]},
     "input[0].content[0].text", "invalid_value"),
    ({"id": "m", "n": 2**70}, "input[0].n", "invalid_value"),
    ({"id": "m", "x": {1: "non-string key"}}, "input[0].x", "invalid_value"),
    ({"id": "m", "x": object()}, "input[0].x", "invalid_value"),
])
def test_what_orjson_cannot_write_is_a_400_naming_it(item: dict[str, Any], param: str,
                                                     code: str) -> None:
    err = refused([item])
    assert (err.param, err.code) == (param, code)


def test_a_field_is_checked_as_deep_as_it_is_written() -> None:
    """A tool sits three levels down in a stream event: a tool orjson writes alone can still
    fail inside the event. The check is exact: what passes is writable where it goes."""
    fits = {"type": "function", "name": "f", "parameters": nested(budget.FIELD_DEPTH - 1)}
    deep = {**fits, "parameters": nested(budget.FIELD_DEPTH)}
    orjson.dumps(deep)  # alone, orjson writes it
    budget.check([], {**SKELETON, "tools": [fits]}, None)
    orjson.dumps({"type": "event", "response": {**SKELETON, "tools": [fits]}})  # really fits
    with pytest.raises(TypeError):
        orjson.dumps({"type": "event", "response": {**SKELETON, "tools": [deep]}})
    err = refused([], {**SKELETON, "tools": [fits, deep]}, None)
    assert (err.param, err.code) == ("tools[1].parameters", "json_too_deep")
    err = refused([], {**SKELETON, "text": {"format": {"type": "json_schema",
                                                       "schema": nested(300)}}}, None)
    assert err.param == "text.format.schema"


def test_over_the_budget_names_the_largest_part_and_the_setting() -> None:
    items = [{"id": "a", "text": "x" * 100}, {"id": "b", "text": "y" * 900}]
    err = refused(items, limit=(800, "responses_max_bytes_per_key"))
    assert (err.param, err.code) == ("input[1]", "store_record_too_large")
    assert "responses_max_bytes_per_key" in err.message and "800" in err.message
    err = refused([{"id": "a"}], {**SKELETON, "instructions": "z" * 2000}, (1000, "x"))
    assert err.param == "instructions"
    err = refused([{"id": "a", "text": "x" * 2000}], limit=(1000, "x"), text_input=True)
    assert err.param == "input"
    # not kept: any size is fine (the body limit bounds it)
    assert budget.check(items, {**SKELETON, "instructions": "z" * 10**6}, None) is None


def canonical(*items: dict[str, Any]) -> list[dict[str, Any]]:
    return canonical_input(parse_responses_request({"input": list(items)}))


def test_canonical_items_keep_only_what_openai_defines() -> None:
    got = canonical(
        {"role": "developer", "content": "Be brief.", "x": 1},
        {"type": "message", "role": "user", "id": "msg_7", "status": "incomplete", "content": [
            {"type": "text", "text": "Look:", "cache": True},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "file_id": None,
             "prompt_cache_breakpoint": {"x": 1}}]},
        {"type": "reasoning", "summary": [], "content": [{"type": "reasoning_text", "text": "t"}],
         "encrypted_content": "opaque"},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Hi", "annotations": [
            {"type": "url_citation", "url": "u"}], "logprobs": [{"junk": 1}]},
            {"type": "refusal", "refusal": "No."}]},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}", "id": "fc_1",
         "status": "in_progress", "namespace": "n"},
        {"type": "function_call_output", "call_id": "c", "output": "r", "caller": {"x": 1}})
    assert [{k: v for k, v in item.items() if k != "id"} for item in got] == [
        {"type": "message", "status": "completed", "role": "developer",
         "content": [{"type": "input_text", "text": "Be brief."}]},
        {"type": "message", "status": "incomplete", "role": "user", "content": [
            {"type": "input_text", "text": "Look:"},
            {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"}]},
        {"type": "reasoning", "status": "completed", "summary": [],
         "content": [{"type": "reasoning_text", "text": "t"}]},
        {"type": "message", "status": "completed", "role": "assistant", "content": [
            {"type": "output_text", "text": "Hi", "annotations": [], "logprobs": []},
            {"type": "refusal", "refusal": "No."}]},
        {"type": "function_call", "status": "in_progress", "call_id": "c", "name": "f",
         "arguments": "{}"},
        {"type": "function_call_output", "status": "completed", "call_id": "c", "output": "r"},
    ]
    assert got[1]["id"] == "msg_7" and got[4]["id"] == "fc_1"
    assert got[0]["id"].startswith("msg_") and got[2]["id"].startswith("rs_")
    assert got[5]["id"].startswith("fco_")
    listed = {"object": "list", "data": got, "has_more": False, "first_id": got[0]["id"],
              "last_id": got[-1]["id"]}
    assert_valid_response("ResponseItemList", listed)


def test_a_string_input_is_one_user_message() -> None:
    (item,) = canonical_input(parse_responses_request({"input": "Hello"}))
    assert {k: v for k, v in item.items() if k != "id"} == {
        "type": "message", "status": "completed", "role": "user",
        "content": [{"type": "input_text", "text": "Hello"}]}
