"""`rewardlab serve` fuzzed from its own OpenAPI schema (schemathesis), in process on the tiny model.

Every route of ``/openapi.json`` gets schema-valid requests (positive) and schema-violating ones (negative),
sent through schemathesis' ASGI transport with the API key set. Each answer must pass schemathesis' checks:
no 5xx, a status code and content type the schema declares for the route, a body (and headers) that
conform to the declared schema, schema-violating requests refused with a 4xx, and the key enforced where the
schema says it is. Streams are checked event by event against the chunk schema the route declares.

The draws come from a fixed seed (``derandomize``), so a run tries the same requests every time;
``benchmarks/fuzz_server.py`` runs far more of them against a real server.
"""

from __future__ import annotations

from collections import Counter

import hypothesis.strategies as st
import pytest
import schemathesis
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from rewardlab.serve import build_engine, create_app
from rewardlab.serve.limits import ServeLimits
from rewardlab.serve.openapi import stream_errors

KEY = "fuzz-key"
ROUTES = [
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/v1/models"),
    ("POST", "/v1/chat/completions"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/load_lora_adapter"),
    ("POST", "/v1/unload_lora_adapter"),
]
GENERATING = ("/v1/chat/completions", "/v1/completions")
# Low limits keep every accepted request cheap on the tiny model; the schema declares them.
LIMITS = ServeLimits(max_n=2, max_tokens=8, max_request_bytes=64 * 1024)
EXAMPLES = 20  # per route and mode: about 260 requests, ~10 s on one thread
# A schema-violating request may be refused for being too large before it is read: that is a refusal too.
REFUSALS = [400, 401, 403, 404, 413]
CONFIG = {
    "seed": 1,
    # Read whole streams (schemathesis stops at 20 events by default): each is checked to its [DONE].
    "max-stream-events": 100_000,
    "auth": {"openapi": {"HTTPBearer": {"bearer": KEY}}},
    "checks": {
        "negative_data_rejection": {"expected-statuses": REFUSALS},
        # Schema-valid requests may still be refused: the schema cannot say which prompts fit the context,
        # which token ids the vocabulary has, or that text must be valid Unicode (a lone surrogate is 400).
        "positive_data_acceptance": {"enabled": False},
    },
}


def fuzzed_app(adapter_dir: str, limits: ServeLimits = LIMITS, api_key: str | None = KEY):
    torch.set_num_threads(1)
    engine = build_engine("tiny", max_batch_size=8, batch_wait_ms=0)
    return create_app(engine, api_key=api_key, limits=limits, adapter_dirs=[adapter_dir])


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    threads = torch.get_num_threads()
    app = fuzzed_app(str(tmp_path_factory.mktemp("adapters")))
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", app, config=schemathesis.Config.from_dict(CONFIG)
    )
    yield schema
    torch.set_num_threads(threads)


def fuzz(schema, method: str, path: str, mode: GenerationMode, examples: int, seen: Counter) -> None:
    """``examples`` requests of ``mode`` to one route, each answer checked; ``seen`` counts their statuses.

    Positive requests to the generating routes name the served model three times in four (a random name is
    a 404 before anything is generated) and ask for a stream half the time.
    """
    operation = schema[path][method]
    steer = mode is GenerationMode.POSITIVE and path in GENERATING

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(mode), other_model=st.integers(0, 3), stream=st.booleans())
    def run(case, other_model, stream):
        if steer and isinstance(case.body, dict):
            if other_model < 3:
                case.body["model"] = "tiny"
            if stream:
                case.body["stream"] = True
        response = case.call_and_validate()
        if "text/event-stream" in response.headers.get("content-type", [""])[0]:
            assert not response.stream_cut_short
            assert stream_errors(schema.raw_schema, path, response.content.decode()) == []
            seen["streams"] += 1
        seen[response.status_code] += 1

    run()


# /health takes no input and no key: there is nothing to violate, so it is fuzzed with valid requests only.
CASES = [
    (route, mode)
    for route in ROUTES
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    if not (mode is GenerationMode.NEGATIVE and route == ("GET", "/health"))
]


@pytest.mark.parametrize(
    "route, mode", CASES, ids=lambda c: c.value if isinstance(c, GenerationMode) else f"{c[0]} {c[1]}"
)
def test_every_route_answers_as_its_schema_declares(served, route, mode):
    seen: Counter = Counter()
    fuzz(served, *route, mode, EXAMPLES, seen)
    assert sum(seen.values()) >= (1 if route == ("GET", "/health") else EXAMPLES // 2)


def test_the_fuzzed_routes_are_every_route_of_the_schema(served):
    declared = {(method.upper(), path) for path, ops in served.raw_schema["paths"].items() for method in ops}
    assert declared == set(ROUTES)


# What the fuzzing found, each fixed, kept as plain tests.


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    app = fuzzed_app(str(tmp_path_factory.mktemp("adapters")))
    with TestClient(app, headers={"Authorization": f"Bearer {KEY}"}) as running:
        yield running


def error_of(response) -> tuple[int, str | None]:
    return response.status_code, response.json()["error"]["param"]


def test_a_wrong_method_is_405_with_the_allowed_methods(client):
    response = client.request("TRACE", "/v1/chat/completions")
    assert response.status_code == 405 and response.headers["allow"] == "POST"
    assert response.json()["error"]["message"] == "Method Not Allowed"


def test_a_lora_path_holding_a_nul_is_400_naming_it_not_500(client):
    response = client.post("/v1/load_lora_adapter", json={"lora_name": "x", "lora_path": "a\u0000b"})
    assert error_of(response) == (400, "lora_path") and "NUL" in response.json()["error"]["message"]


@pytest.mark.parametrize("field, value", [("echo", 0), ("best_of", True), ("repetition_penalty", True)])
def test_unsupported_fields_are_off_only_at_their_json_default(client, field, value):
    """true == 1 and 0 == false in Python, not in JSON: only the value the schema declares is off."""
    body = {"model": "tiny", "prompt": "1+1=", "max_tokens": 2}
    assert error_of(client.post("/v1/completions", json={**body, field: value})) == (400, field)
    off = {"echo": False, "best_of": 1, "repetition_penalty": 1.0}[field]
    assert client.post("/v1/completions", json={**body, field: off}).status_code == 200


def test_logit_bias_keys_are_ascii_token_ids(client):
    body = {"model": "tiny", "prompt": "1+1=", "max_tokens": 2}
    response = client.post("/v1/completions", json={**body, "logit_bias": {"²": 1}})  # str.isdigit() says yes
    assert error_of(response) == (400, "logit_bias") and "keys must be token ids" in response.text
    assert client.post("/v1/completions", json={**body, "logit_bias": {" 5 ": 1}}).status_code == 200


def test_the_schema_declares_400_not_fastapis_422_and_the_key_only_when_set(client, tmp_path):
    schema = client.get("/openapi.json").json()
    operations = [op for path in schema["paths"].values() for op in path.values()]
    assert all("422" not in op["responses"] for op in operations)
    assert "HTTPValidationError" not in schema["components"]["schemas"]
    chat = schema["paths"]["/v1/chat/completions"]["post"]
    assert {"200", "400", "401", "404", "413", "429", "500"} <= set(chat["responses"])
    assert chat["security"] == [{"HTTPBearer": []}]
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    # The server's own limits bound the schema's n and max_tokens.
    request = schema["components"]["schemas"]["ChatCompletionRequest"]["properties"]
    assert {option.get("maximum") for option in request["n"]["anyOf"]} == {LIMITS.max_n, None}
    keyless = fuzzed_app(str(tmp_path), api_key=None)
    chat = TestClient(keyless).get("/openapi.json").json()["paths"]["/v1/chat/completions"]["post"]
    assert "security" not in chat and "401" not in chat["responses"]


def test_stream_errors_finds_what_the_schema_does_not_allow(client):
    openapi = client.get("/openapi.json").json()
    body = {"model": "tiny", "prompt": "1+1=", "max_tokens": 4, "n": 2, "stream": True}
    text = client.post("/v1/completions", json=body).text
    assert stream_errors(openapi, "/v1/completions", text) == []
    assert stream_errors(openapi, "/v1/completions", text.removesuffix("data: [DONE]\n\n")) == [
        "the stream does not end with [DONE]"
    ]
    (broken,) = stream_errors(openapi, "/v1/completions", text.replace('"index": 0', '"index": "0"', 1))
    assert "does not match the schema" in broken
    chat = stream_errors(openapi, "/v1/chat/completions", text)  # text chunks are not chat chunks
    assert chat and all("does not match" in error for error in chat)


@pytest.mark.parametrize("temperature", [2.2250738585e-313, 1e-40, 1e-6])
def test_a_temperature_near_zero_is_greedy_not_a_500(client, temperature):
    """Logits divided by 1e-40 overflow float32 (and 2e-313 is zero in it): the softmax was NaN, the batch a
    500. Below 1e-5 a temperature is greedy, as in vLLM, log-probabilities raw as at 0."""
    body = {"model": "tiny", "prompt": "12+7=", "max_tokens": 8, "logprobs": 0}
    greedy = client.post("/v1/completions", json={**body, "temperature": 0}).json()["choices"][0]
    response = client.post("/v1/completions", json={**body, "temperature": temperature})
    assert response.status_code == 200, response.text
    choice = response.json()["choices"][0]
    assert choice["text"] == greedy["text"] and choice["logprobs"] == greedy["logprobs"]
