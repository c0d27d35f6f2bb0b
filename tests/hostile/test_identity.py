"""One owner per request, derived once at the door (issue #17, item 5).

Before: ``FrontDoor`` authenticated the *last* ``Authorization`` header while the Responses
routes took the *first*, so ``Authorization: Basic x`` followed by a valid ``Bearer`` key read
and wrote the keyless owner's stored responses, and any first ``Bearer <string>`` picked an
owner of the caller's choosing.
"""

from __future__ import annotations

import pytest

from server.settings import Settings, SettingsError, load_settings
from tests.api.harness import MODEL, serve
from tests.api.test_tools import Script
from tests.spec import assert_error

KEYS = ["key-alice", "key-bob"]


@pytest.fixture
def app(tokenizer_dirs, tmp_path):
    s = Script(tokenizer_dirs, "v3-spm")
    tokens = s.ids("Stored answer.")
    with serve(s.dir, lambda p, sp, i: tokens, api_keys=KEYS,
               responses_store=f"sqlite:///{tmp_path}/r.db") as (client, fake):
        client.fake = fake
        yield client


def create(client, headers):
    return client.post("/v1/responses", json={"model": MODEL, "input": "hi"}, headers=headers)


@pytest.mark.parametrize("headers", [
    [("Authorization", "Basic eDp4"), ("Authorization", "Bearer key-alice")],
    [("Authorization", "Bearer key-alice"), ("Authorization", "Bearer key-bob")],
    [("Authorization", "Bearer key-alice"), ("Authorization", "Bearer attacker-chosen")],
    [("x-api-key", "key-alice"), ("x-api-key", "key-bob")],
    [("Authorization", "Bearer key-alice"), ("x-api-key", "key-bob")],
])
def test_more_than_one_credential_is_a_400_and_nothing_is_stored(app, headers):
    assert_error(create(app, headers), 400, code="ambiguous_credentials")
    assert app.fake.requests == []  # refused at the door: nothing generated, nothing stored


@pytest.mark.parametrize("value", ["Basic eDp4", "Bearer", "Bearer ", "key-alice", "Token key-alice"])
def test_anything_but_a_bearer_key_is_a_401(app, value):
    assert_error(app.get("/v1/models", headers={"Authorization": value}), 401)


def test_the_owner_is_the_key_that_matched_whatever_header_carried_it(app):
    r = create(app, {"Authorization": "Bearer key-alice"})
    assert r.status_code == 200, r.text
    rid = r.json()["id"]
    for headers in ({"Authorization": "Bearer key-alice"}, {"authorization": "bearer key-alice"},
                    {"x-api-key": "key-alice"},
                    {"Authorization": "Bearer key-alice", "x-api-key": "key-alice"}):
        assert app.get(f"/v1/responses/{rid}", headers=headers).status_code == 200, headers
    assert_error(app.get(f"/v1/responses/{rid}", headers={"Authorization": "Bearer key-bob"}), 404)
    assert_error(app.get(f"/v1/responses/{rid}", headers={"x-api-key": "key-bob"}), 404)
    assert_error(app.get(f"/v1/responses/{rid}"), 401)


def test_every_path_but_probes_and_the_api_description_needs_the_key(app):
    for path in ("/health", "/ready", "/status", "/openapi.json", "/docs"):
        assert app.get(path).status_code == 200, path
    for path in ("/metrics", "/v1/models", "/tokenize", "/nowhere"):
        assert_error(app.get(path), 401)


def test_status_does_not_echo_internal_error_text(tokenizer_dirs):
    s = Script(tokenizer_dirs, "v3-spm")
    with serve(s.dir, lambda p, sp, i: [2]) as (client, _):
        state = client.app.state.server
        state.error, state.phase = "CUDA error at /opt/secret/path.py:42 (password=hunter2)", "failed"
        body = client.get("/status").json()
        assert body["phase"] == "failed" and body["error"]
        assert "secret" not in str(body) and "hunter2" not in str(body)


def test_one_parsing_rule_for_keys_in_every_source(tmp_path):
    cli, _, _ = load_settings(["--api-keys", "a1,b2", "--api-keys", "c3"], env={})
    env, _, _ = load_settings([], env={"MSERVE_API_KEYS": "a1, b2,c3"})
    key_file = tmp_path / "keys"
    key_file.write_text("a1,b2\nc3\n\n")
    from_file, _, _ = load_settings(["--api-key-file", str(key_file)], env={})
    assert cli.resolved_api_keys() == env.resolved_api_keys() == ["a1", "b2", "c3"]
    assert from_file.resolved_api_keys() == ["a1", "b2", "c3"]


@pytest.mark.parametrize("bad", ["has space", "tab\tkey", "ключ", "a,b"])
def test_keys_that_would_read_differently_somewhere_are_refused(tmp_path, bad):
    with pytest.raises(ValueError):
        Settings(api_keys=[bad])
    key_file = tmp_path / "keys"
    key_file.write_text(bad.replace(",", "") + " x\n" if "," in bad else bad + "\n")
    with pytest.raises(SettingsError):
        Settings(api_key_file=key_file).resolved_api_keys()
