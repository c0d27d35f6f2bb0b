"""Every route in /openapi.json, fuzzed with schemathesis (valid and invalid data): no 5xx.

The app runs in-process over the scripted engine with API keys and a response store, so every
route does its real work: parsing, budgets, rendering, constraints, the store. Cases are
derandomised (the same examples every run) and bounded per operation to keep the tier fast."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode

from tests.api.harness import serve
from tests.api.test_tools import Script

EXAMPLES = int(os.environ.get("MSERVE_FUZZ_EXAMPLES", "40"))
KEY = "fuzz-key"


@pytest.fixture(scope="module")
def app(tokenizer_dirs, tmp_path_factory):
    s = Script(tokenizer_dirs, "v11-tekken")
    tokens = s.ids("Some text.")
    store = tmp_path_factory.mktemp("fuzz") / "r.db"
    with serve(s.dir, lambda p, sp, i: tokens, api_keys=[KEY],
               responses_store=f"sqlite:///{store}") as (client, _):
        yield client


def operations(client) -> list:
    schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
    return [result.ok() for result in schema.get_all_operations()]


def send(client, case):
    kwargs = case.as_transport_kwargs(base_url="http://testserver",
                                      headers={"Authorization": f"Bearer {KEY}"})
    if "data" in kwargs:
        kwargs["content"] = kwargs.pop("data")
    kwargs.pop("cookies", None)
    return client.request(**kwargs)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_route_answers_a_server_error(app, mode):
    failures: list[str] = []
    ops = operations(app)
    assert {op.path for op in ops} >= {"/v1/chat/completions", "/v1/responses",
                                       "/v1/responses/{response_id}"}
    for op in ops:
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy(generation_mode=mode))
        def run(case):
            response = send(app, case)
            if response.status_code >= 500 and response.status_code != 503:
                failures.append(f"{op.method.upper()} {op.path} → {response.status_code}: "
                                f"{response.text[:200]}\n  body: {str(case.body)[:300]}")

        try:
            run()
        except Unsatisfiable:  # nothing to make invalid (no parameters, no body)
            assert mode == GenerationMode.NEGATIVE, op.path
    assert not failures, "\n".join(failures[:10])
    assert app.get("/health").status_code == 200
