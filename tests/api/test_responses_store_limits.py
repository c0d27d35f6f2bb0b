"""Hostile input against the Responses store, through the real app over the scripted engine:
per-key quotas (one key's traffic never evicts another key's responses), items stored in their
canonical shape (unknown fields cost nothing), everything that will be stored checked before the
engine runs (400 naming the field, nothing stored, the engine never called), bounded chains, the
missing link of a chain named, and ``store: true`` refused when storing is off."""

from __future__ import annotations

import sqlite3

import pytest

from server.errors import InvalidRequest
from server.responses.protocol import parse_responses_request
from server.responses.store import StoredResponse, owner_for
from tests.api.harness import MODEL, serve
from tests.api.test_responses import WEATHER, typed_events
from tests.api.test_tools import Script
from tests.spec import assert_error, assert_valid_response

A, B = {"Authorization": "Bearer key-a"}, {"Authorization": "Bearer key-b"}
KEYS = ["key-a", "key-b"]


@pytest.fixture
def store(tmp_path):
    return f"sqlite:///{tmp_path}/responses.db"


@pytest.fixture
def script(tokenizer_dirs):
    return Script(tokenizer_dirs, "v11-tekken")


def rows(store: str) -> list[tuple[str, str, int]]:
    """(id, owner, bytes) of every stored row, read from the database file itself."""
    conn = sqlite3.connect(store.removeprefix("sqlite:///"))
    try:
        return conn.execute("SELECT id, owner, bytes FROM mserve_responses ORDER BY id").fetchall()
    except sqlite3.OperationalError:  # no table yet: nothing was ever stored
        return []
    finally:
        conn.close()


def post(client, headers=None, **body):
    return client.post("/v1/responses", headers=headers or {}, json={"model": MODEL, **body})


def deep(levels: int) -> dict:
    value: dict = {"type": "string"}
    for _ in range(levels):
        value = {"anyOf": [value]}
    return value


def test_stored_items_are_canonical_and_unknown_fields_cost_nothing(script, store):
    junk = "x" * 2_000_000
    sent = [
        {"role": "user", "content": [{"type": "input_text", "text": "Weather?", "junk": junk}],
         "junk": junk, "nested": {"a": [[[{"b": 1}]]]}},
        {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "s"}],
         "encrypted_content": junk},
        {"role": "assistant", "content": "Let me look.", "phase": "commentary", "extra": junk},
        {"type": "function_call", "call_id": "c1", "name": "get_current_weather",
         "arguments": '{"location": "Paris"}', "namespace": "ns", "caller": {"type": junk}},
        {"type": "function_call_output", "call_id": "c1", "status": "completed",
         "output": [{"type": "input_text", "text": "sunny", "junk": junk}]},
    ]
    with serve(script.dir, lambda p, sp, i: script.ids("Sunny."), responses_store=store,
               max_body_bytes=64 * 1024**2) as (client, _):
        body = post(client, tools=[WEATHER], input=sent).json()
        listed = client.get(f"/v1/responses/{body['id']}/input_items?order=asc").json()
        follow = post(client, previous_response_id=body["id"], tools=[WEATHER], input="Thanks!")
    assert_valid_response("ResponseItemList", listed)
    items = [{k: v for k, v in item.items() if k != "id"} for item in listed["data"]]
    assert items == [
        {"type": "message", "status": "completed", "role": "user",
         "content": [{"type": "input_text", "text": "Weather?"}]},
        {"type": "reasoning", "status": "completed",
         "summary": [{"type": "summary_text", "text": "s"}]},
        {"type": "message", "status": "completed", "role": "assistant", "phase": "commentary",
         "content": [{"type": "output_text", "text": "Let me look.", "annotations": [],
                      "logprobs": []}]},
        {"type": "function_call", "status": "completed", "call_id": "c1",
         "name": "get_current_weather", "arguments": '{"location": "Paris"}'},
        {"type": "function_call_output", "status": "completed", "call_id": "c1",
         "output": [{"type": "input_text", "text": "sunny"}]},
    ]
    assert listed["data"][1]["id"] == "rs_1"  # ids sent are kept, missing ones made
    sizes = {rid: size for rid, _, size in rows(store)}
    assert sizes[body["id"]] < 10_000  # the 10 MB of junk fields were never written
    assert follow.status_code == 200, follow.text  # the stored items continue the conversation


@pytest.mark.parametrize("item, param", [
    ({"role": "user", "content": "x", "status": "done"}, "input[0].status"),
    ({"role": "user", "content": [{"type": "input_image", "image_url": "data:,", "detail": "max"}]},
     "input[0].content[0].detail"),
    ({"role": "assistant", "content": [{"type": "output_text", "text": 3}]}, "input[0].content[0]"),
    ({"role": "assistant", "content": "x", "phase": "draft"}, "input[0].phase"),
    ({"type": "reasoning", "summary": "not a list"}, "input[0].summary"),
    ({"type": "reasoning", "summary": [{"type": "summary_text", "text": ["x"]}]},
     "input[0].summary[0]"),
])
def test_malformed_fields_that_would_be_stored_are_400s(script, store, item, param):
    with serve(script.dir, lambda p, sp, i: script.ids("ok"), responses_store=store) as (client, fake):
        r = post(client, input=[item])
    assert_error(r, 400, param=param)
    assert rows(store) == [] and fake.requests == []


def test_over_the_record_budget_is_a_400_before_generating_when_storing_was_asked_for(
        script, store):
    big = "y" * 6000
    with serve(script.dir, lambda p, sp, i: script.ids("ok"), responses_store=store,
               api_keys=KEYS, responses_max_record_bytes=4096) as (client, fake):
        theirs = post(client, B, input="B's conversation").json()
        before = rows(store)
        refused = post(client, A, store=True, input=[{"role": "user", "content": "small"},
                                                     {"role": "user", "content": big}])
        too_long = post(client, A, input="x", instructions=big, store=True)
        generated = len(fake.requests)
        defaulted = post(client, A, input=big)  # SDKs never send 'store': answered, not kept
        unstored = post(client, A, input=big, store=False)
        b_still = client.get(f"/v1/responses/{theirs['id']}", headers=B)
    err = assert_error(refused, 400, param="input[1]", code="store_record_too_large")
    assert "responses_max_record_bytes" in err["message"] and "'store': false" in err["message"]
    assert_error(too_long, 400, param="instructions", code="store_record_too_large")
    assert generated == 1  # only B's request reached the engine
    assert defaulted.status_code == 200 and defaulted.json()["store"] is False
    assert unstored.status_code == 200 and unstored.json()["store"] is False
    assert rows(store) == before  # nothing of A's was stored; B's row is untouched
    assert b_still.status_code == 200 and b_still.json() == theirs


def test_the_per_key_bytes_bound_a_record_too(script, store):
    with serve(script.dir, lambda p, sp, i: script.ids("ok"), responses_store=store,
               responses_max_bytes_per_key=3000) as (client, _):
        r = post(client, input="z" * 4000, store=True)
    err = assert_error(r, 400, param="input", code="store_record_too_large")
    assert "responses_max_bytes_per_key" in err["message"]


def start(client, **body):
    """``ResponsesService.start`` called directly, without the HTTP layer's body budgets (the
    service must be safe on its own); the error it raises, if any."""
    service = client.app.state.server.responses
    req = parse_responses_request({"model": MODEL, **body})
    try:
        run = client.portal.call(service.start, req, owner_for(None))
    except InvalidRequest as err:
        return err
    client.portal.call(run.steps.aclose)
    return None


def test_unwritable_tool_parameters_and_schemas_are_400s_before_generating(script, store):
    """orjson writes at most 254 levels: deeper tool parameters used to generate, then fail to
    store (500, or a stream with no response.completed). Checked before the engine now."""
    tool = {**WEATHER, "parameters": {"type": "object", "properties": {"a": deep(130)}}}
    fmt = {"type": "json_schema", "name": "n", "schema": {"type": "object", "properties": {
        "a": deep(130)}}}
    with serve(script.dir, lambda p, sp, i: script.ids("ok"), responses_store=store) as (client, fake):
        kept = start(client, input="x", tools=[tool])
        unkept = start(client, input="x", tools=[tool], store=False, stream=True)
        schema = start(client, input="x", text={"format": fmt})
        engine_calls, stored = len(fake.requests), rows(store)
        forced = post(client, input="x", tools=[WEATHER],
                      tool_choice={"type": "function", "name": "get_current_weather",
                                   "junk": "j" * 100_000})
        constraint = fake.requests[-1][1].constraint if fake.requests else None
    for err in (kept, unkept):
        assert err is not None and (err.param, err.code) == ("tools[0].parameters", "json_too_deep")
    assert schema is not None and (schema.param, schema.code) == ("text.format.schema",
                                                                  "json_too_deep")
    assert engine_calls == 0 and stored == []
    # tool_choice is echoed (and stored) in its canonical shape: the junk beside the name is not
    assert forced.status_code == 200, forced.text
    assert forced.json()["tool_choice"] == {"type": "function", "name": "get_current_weather"}
    assert constraint is not None and rows(store)[0][2] < 10_000


def test_the_service_is_safe_on_its_own(script, store):
    """Without the HTTP layer's body budgets: a deep item field is dropped (canonical items), deep
    tool parameters are a 400 before the engine, and a record that still fails to be written
    after generation answers with store: false."""
    with serve(script.dir, lambda p, sp, i: script.ids("Fine."), responses_store=store) as (client, fake):
        service = client.app.state.server.responses
        owner = owner_for(None)

        def run(**body):
            req = parse_responses_request({"model": MODEL, **body})
            return client.portal.call(lambda: _start_and_complete(service, req, owner))

        nested: list = []
        for _ in range(400):
            nested = [nested]
        answer = run(input=[{"role": "user", "content": "x", "junk": nested}])
        listed = client.get(f"/v1/responses/{answer['id']}/input_items").json()
        with pytest.raises(InvalidRequest) as refused:
            run(input="x", tools=[{**WEATHER, "parameters": {"type": "object", "x": nested}}])
        engine_calls = len(fake.requests)

        real_put = client.app.state.server.store.put

        async def corrupting_put(record: StoredResponse):
            await real_put(StoredResponse(record.id, record.owner, record.created_at, None,
                                          {**record.response, "junk": nested}, record.input_items))

        client.app.state.server.store.put = corrupting_put
        unstored = run(input="y")
        events = typed_events(post(client, input="y", stream=True))
    assert answer["store"] is True and answer["output_text"] == "Fine."
    assert listed["data"][0]["content"] == [{"type": "input_text", "text": "x"}]
    assert (refused.value.param, refused.value.code) == ("tools[0].parameters", "json_too_deep")
    assert engine_calls == 1
    assert unstored["store"] is False and unstored["output_text"] == "Fine."
    assert events[-1]["type"] == "response.completed" and events[-1]["response"]["store"] is False


async def _start_and_complete(service, req, owner):
    return await service.complete(await service.start(req, owner))


def test_a_key_over_its_quota_loses_only_its_own_oldest(script, store):
    with serve(script.dir, lambda p, sp, i: script.ids("ok"), responses_store=store,
               api_keys=KEYS, responses_max_rows_per_key=2) as (client, _):
        bs = [post(client, B, input=f"b{i}").json()["id"] for i in range(2)]
        as_ = [post(client, A, input=f"a{i}").json()["id"] for i in range(5)]
        a_alive = [client.get(f"/v1/responses/{i}", headers=A).status_code for i in as_]
        b_alive = [client.get(f"/v1/responses/{i}", headers=B).status_code for i in bs]
    assert a_alive == [404, 404, 404, 200, 200] and b_alive == [200, 200]


def test_one_keys_flood_never_evicts_another_keys_conversation(script, store):
    with serve(script.dir, lambda p, sp, i: script.ids("ok"), responses_store=store,
               api_keys=KEYS, responses_max_rows=6) as (client, _):
        first = post(client, B, input="Remember 7.").json()
        second = post(client, B, input="And 8.", previous_response_id=first["id"]).json()
        for i in range(12):
            assert post(client, A, input=f"spam {i}").status_code == 200
        follow = post(client, B, input="Sum?", previous_response_id=second["id"])
    assert follow.status_code == 200, follow.text
    owners = [owner for _, owner, _ in rows(store)]
    assert owners.count(owner_for("key-b")) == 3 and owners.count(owner_for("key-a")) == 3


def test_chains_are_bounded_and_a_missing_link_is_named(script, store):
    with serve(script.dir, lambda p, sp, i: script.ids("ok"), responses_store=store,
               api_keys=KEYS, responses_max_chain_depth=2) as (client, fake):
        ids = [post(client, A, input="one").json()["id"]]
        for text in ("two", "three"):  # a continuation loads two responses: allowed
            ids.append(post(client, A, input=text, previous_response_id=ids[-1]).json()["id"])
        before, calls = rows(store), len(fake.requests)
        too_long = post(client, A, input="four", previous_response_id=ids[-1])  # three: refused
        streamed = post(client, A, input="four", previous_response_id=ids[-1], stream=True)
        assert rows(store) == before and len(fake.requests) == calls
        fresh = post(client, A, input="again").json()["id"]
        follow = post(client, A, input="next", previous_response_id=fresh).json()["id"]
        deleted = client.delete(f"/v1/responses/{fresh}", headers=A)
        broken = post(client, A, input="more", previous_response_id=follow)
        latest = client.get(f"/v1/responses/{follow}", headers=A)
        other_key = post(client, B, input="x", previous_response_id=follow)
    for r in (too_long, streamed):
        err = assert_error(r, 400, param="previous_response_id",
                           code="previous_response_chain_too_long")
        assert "responses_max_chain_depth" in err["message"]
    assert deleted.status_code == 200
    err = assert_error(broken, 404, param="previous_response_id", code="previous_response_not_found")
    assert fresh in err["message"] and follow in err["message"]
    assert latest.status_code == 200  # the latest is still readable: the 404 names the missing one
    err = assert_error(other_key, 404, param="previous_response_id")
    assert fresh not in err["message"]  # another key learns nothing about the chain


def test_chain_bytes_are_bounded(script, store):
    with serve(script.dir, lambda p, sp, i: script.ids("ok"), responses_store=store,
               responses_max_chain_bytes=8000) as (client, _):
        first = post(client, input="hello " * 800).json()["id"]  # ~6 KB stored, few tokens
        second = post(client, input="again " * 800, previous_response_id=first).json()["id"]
        r = post(client, input="c", previous_response_id=second)
    err = assert_error(r, 400, param="previous_response_id", code="previous_response_chain_too_large")
    assert "responses_max_chain_bytes" in err["message"]


def test_store_true_with_the_store_off_is_refused(script):
    with serve(script.dir, lambda p, sp, i: script.ids("ok"), responses_store="off") as (client, fake):
        explicit = post(client, input="x", store=True)
        streamed = post(client, input="x", store=True, stream=True)
        calls = len(fake.requests)
        defaulted = post(client, input="x")
        unstored = post(client, input="x", store=False)
    for r in (explicit, streamed):
        assert_error(r, 400, param="store", code="store_disabled")
    assert calls == 0
    assert defaulted.status_code == 200 and defaulted.json()["store"] is False
    assert unstored.status_code == 200 and unstored.json()["store"] is False
