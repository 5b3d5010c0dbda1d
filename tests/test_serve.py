"""`rewardlab serve` end to end: a real uvicorn server on 127.0.0.1, driven by the official openai client.

One server per module (the tiny model plus one LoRA adapter whose B weights are perturbed so it answers
differently), started in a background thread on a socket bound to a free port. The tests run in file order
against it; each leaves it as it found it.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from typing import Literal

import httpx
import jsonschema
import openai
import pytest
import torch
import uvicorn
from openai import OpenAI
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from rewardlab.cli import app as cli_app
from rewardlab.serve import build_engine, create_app
from rewardlab.serve.batching import Job, take_batch
from rewardlab.serve.streaming import TextDeltas

KEY = "test-key"
MESSAGES = [{"role": "user", "content": "12+7="}]


def make_adapter(path, seed: int = 1) -> str:
    """A LoRA adapter on the tiny model with visibly non-zero B weights, saved in PEFT format."""
    from rewardlab.models import LoraSettings, load_model

    torch.manual_seed(seed)
    model, _ = load_model("tiny", lora=LoraSettings(rank=4))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.3)
    model.save_pretrained(path)
    return str(path)


class Server:
    def __init__(self, engine, tmp, limits=None, adapter_dirs=None):
        self.engine = engine
        self.tmp = tmp
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        app = create_app(engine, api_key=KEY, limits=limits, adapter_dirs=adapter_dirs)
        self.uvicorn = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.uvicorn.run, kwargs={"sockets": [sock]}, daemon=True)

    def start(self) -> Server:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.uvicorn.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.uvicorn.should_exit = True
        self.thread.join(timeout=10)

    def client(self, api_key: str = KEY) -> OpenAI:
        return OpenAI(base_url=f"{self.url}/v1", api_key=api_key, max_retries=0, timeout=60)

    def post(self, route: str, body: dict) -> httpx.Response:
        return httpx.post(
            f"{self.url}{route}", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60
        )

    def metrics(self) -> dict:
        return httpx.get(f"{self.url}/metrics", headers={"Authorization": f"Bearer {KEY}"}).json()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serve")
    # One thread decodes the tiny model fastest, and does not fight other processes for a shared CPU.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    adapter = make_adapter(tmp / "tuned")
    # A wide batching window so the concurrency tests batch however slowly the threads start.
    engine = build_engine("tiny", {"tuned": adapter}, max_batch_size=32, batch_wait_ms=50)
    # Runtime adapter loads may read from this module's directory only.
    running = Server(engine, tmp, adapter_dirs=[str(tmp)]).start()
    yield running
    running.stop()
    torch.set_num_threads(threads)


def greedy(client: OpenAI, model: str, max_tokens: int = 12, **extra) -> str:
    reply = client.chat.completions.create(
        model=model, messages=MESSAGES, temperature=0, max_tokens=max_tokens, **extra
    )
    return reply.choices[0].message.content


def test_health_needs_no_key_and_models_lists_base_and_adapters(server):
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok"}
    models = server.client().models.list()
    assert [m.id for m in models.data] == ["tiny", "tuned"]
    assert all(m.object == "model" for m in models.data)


def test_chat_completion_with_n_choices_and_usage(server):
    reply = server.client().chat.completions.create(
        model="tiny", messages=MESSAGES, n=2, max_tokens=8, seed=3
    )
    assert [c.index for c in reply.choices] == [0, 1]
    assert all(c.message.role == "assistant" and c.finish_reason in ("stop", "length") for c in reply.choices)
    assert reply.usage.prompt_tokens > 0 and 2 <= reply.usage.completion_tokens <= 16
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_base_and_adapter_answer_differently_at_temperature_zero(server):
    client = server.client()
    assert greedy(client, "tiny") != greedy(client, "tuned")
    assert greedy(client, "tuned") == greedy(client, "tuned")


def test_seed_makes_sampling_reproducible(server):
    client = server.client()

    def sample(seed):
        reply = client.chat.completions.create(
            model="tuned", messages=MESSAGES, temperature=1.0, max_tokens=16, n=2, seed=seed
        )
        return [c.message.content for c in reply.choices]

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_logprobs_cover_every_listed_token(server):
    reply = server.client().chat.completions.create(
        model="tuned", messages=MESSAGES, temperature=0, max_tokens=6, logprobs=True
    )
    content = reply.choices[0].logprobs.content
    assert "".join(t.token for t in content) == reply.choices[0].message.content
    assert all(t.logprob <= 0 for t in content)


def listed_and_text(choice, chat: bool) -> tuple[list[str], str]:
    if chat:
        return [t.token for t in choice.logprobs.content], choice.message.content
    return choice.logprobs.tokens, choice.text


@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize("model", ["tiny", "tuned"])
def test_logprobs_and_usage_cover_exactly_the_tokens_behind_the_text(server, chat, model):
    """With a stop string the tokens that carry it are neither listed nor counted; special tokens the content
    skips are listed as ""; so the listed tokens join to the content, and completion_tokens counts them plus
    the end-of-turn token of a completion that ended on one (the untrained tiny model writes role markers)."""
    client = server.client()

    def ask(**extra):
        if chat:
            return client.chat.completions.create(
                model=model, messages=MESSAGES, temperature=0, max_tokens=16, logprobs=True, **extra
            )
        return client.completions.create(
            model=model, prompt="12+7=", temperature=0, max_tokens=16, logprobs=0, **extra
        )

    free = ask()
    tokens, text = listed_and_text(free.choices[0], chat)
    assert "".join(tokens) == text and len(text) >= 5
    ended = free.choices[0].finish_reason == "stop"
    assert free.usage.completion_tokens == len(tokens) + ended
    stop = text[3:5]  # two characters: the stop string spans two tokens
    cut = ask(stop=[stop])
    tokens, text = listed_and_text(cut.choices[0], chat)
    full = listed_and_text(free.choices[0], chat)[1]
    assert text == full[: full.find(stop)]
    assert "".join(tokens) == text and cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens == len(tokens)  # the stop string's tokens are not the completion's
    if not chat:
        assert cut.choices[0].logprobs.text_offset == [len("".join(tokens[:i])) for i in range(len(tokens))]


def test_special_tokens_are_listed_as_the_empty_text_they_add(server):
    reply = server.client().chat.completions.create(
        model="tiny", messages=MESSAGES, temperature=0, max_tokens=12, logprobs=True, top_logprobs=2
    )
    content = reply.choices[0].logprobs.content
    special = [t for t in content if t.token == ""]
    assert special and all(t.bytes == [] and t.logprob <= 0 for t in special)  # generated, priced, unseen
    assert reply.usage.completion_tokens == len(content) == 12
    assert "<|" not in "".join(alt.token for t in content for alt in t.top_logprobs)


class ByteTokenizer:
    """Token i < 256 is byte i (a character may take several), 256 is a special token."""

    def decode(self, ids, skip_special_tokens=False):
        data = bytes(i for i in ids if i < 256)
        return data.decode("utf-8", errors="replace") + (
            "" if skip_special_tokens else "<s>" * ids.count(256)
        )


def test_token_texts_join_to_the_text_when_a_character_takes_several_tokens():
    from rewardlab.serve.responses import token_texts

    ids = [*b"a", 256, *"😀".encode(), *b"b"]
    texts = token_texts(ids, ByteTokenizer())
    assert texts == ["a", "", "", "", "", "😀", "b"]  # the emoji's four bytes: text when the last arrives


def test_streamed_logprobs_and_usage_match_the_non_streamed_ones(server):
    client = server.client()
    full = greedy(client, "tuned", max_tokens=16)
    request = {"model": "tuned", "messages": MESSAGES, "temperature": 0, "max_tokens": 16, "logprobs": True}
    request["stop"] = [full[4:6]]
    expected = client.chat.completions.create(**request)
    chunks = list(
        client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True})
    )
    [final] = [c.choices[0] for c in chunks if c.choices and c.choices[0].finish_reason]
    assert final.logprobs.content == expected.choices[0].logprobs.content
    assert chunks[-1].usage == expected.usage


def test_logprobs_are_computed_only_for_requests_that_ask(server, monkeypatch):
    computed, steps = server.engine._logprobs, []

    def spy(*args):
        steps.append(True)
        return computed(*args)

    monkeypatch.setattr(server.engine, "_logprobs", spy)
    client = server.client()
    asked = []
    for request in (
        lambda: greedy(client, "tuned", max_tokens=4),
        lambda: greedy(client, "tuned", max_tokens=4, logprobs=True),
        lambda: client.completions.create(
            model="tuned", prompt="3+4=", max_tokens=4, temperature=0, logprobs=0
        ),
    ):
        steps.clear()
        request()
        asked.append(bool(steps))
    assert asked == [False, True, True]


def test_default_valued_parameters_change_no_token(server):
    """Penalties, bias and alternatives at their defaults sample exactly what a request without them does."""
    client = server.client()
    request = {"model": "tuned", "messages": MESSAGES, "n": 3, "max_tokens": 12, "seed": 5}
    plain = client.chat.completions.create(**request)
    defaults = client.chat.completions.create(
        **request, presence_penalty=0, frequency_penalty=0, logit_bias={}, logprobs=True, top_logprobs=0
    )
    assert [c.message.content for c in defaults.choices] == [c.message.content for c in plain.choices]
    assert defaults.usage == plain.usage


def test_penalties_and_logit_bias_sample_as_the_sampler_does(server):
    from rewardlab.sampling.base import Prompt, SamplingParams

    engine, client = server.engine, server.client()
    letter = engine.models.tokenizer.convert_tokens_to_ids("q")
    forced = client.chat.completions.create(
        model="tuned", messages=MESSAGES, temperature=0, max_tokens=5, logit_bias={str(letter): 100}
    )
    assert forced.choices[0].message.content == "qqqqq"

    def sampled(**penalties) -> str:
        """The base model's completion straight from the sampler (routed as the server routes it)."""
        params = SamplingParams(temperature=0, max_new_tokens=12, **penalties)
        prompt = Prompt([], token_ids=engine.sampler.renderer.prompt_ids(MESSAGES))
        return engine.router.generate(engine.models.model, [prompt], [None], params)[0][0].text

    penalties = {"presence_penalty": 1.5, "frequency_penalty": 0.5}
    reply = client.chat.completions.create(
        model="tiny", messages=MESSAGES, temperature=0, max_tokens=12, **penalties
    )
    assert reply.choices[0].message.content == sampled(**penalties) != sampled()


def test_top_k_one_is_greedy_whatever_the_temperature(server):
    """vLLM's top_k extension: the k likeliest tokens only, sent by the openai client in the body."""
    client = server.client()
    request = {"model": "tuned", "messages": MESSAGES, "max_tokens": 8}
    greedy_reply = client.chat.completions.create(**request, temperature=0)
    hot = client.chat.completions.create(**request, n=3, temperature=1.5, extra_body={"top_k": 1})
    assert {c.message.content for c in hot.choices} == {greedy_reply.choices[0].message.content}


def test_top_logprobs_in_chat_and_legacy_shapes(server):
    client = server.client()
    chat = client.chat.completions.create(
        model="tuned", messages=MESSAGES, temperature=0, max_tokens=6, logprobs=True, top_logprobs=3
    )
    for entry in chat.choices[0].logprobs.content:
        assert len(entry.top_logprobs) == 3
        assert [t.logprob for t in entry.top_logprobs] == sorted(
            (t.logprob for t in entry.top_logprobs), reverse=True
        )
        assert (entry.top_logprobs[0].token, entry.top_logprobs[0].logprob) == (
            entry.token,
            entry.logprob,
        )  # greedy
        assert entry.top_logprobs[0].bytes == list(entry.token.encode())
    text = client.completions.create(
        model="tuned", prompt="3+4=", temperature=1, seed=1, max_tokens=6, logprobs=2
    )
    logprobs = text.choices[0].logprobs
    assert len(logprobs.top_logprobs) == len(logprobs.tokens) > 0
    for token, logprob, top in zip(
        logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs, strict=True
    ):
        assert 2 <= len(top) <= 3 and top[token] == pytest.approx(
            logprob
        )  # the sampled token is always there


def test_stream_adds_up_to_the_non_streamed_text(server):
    client = server.client()
    request = {"model": "tuned", "messages": MESSAGES, "temperature": 0, "max_tokens": 16}
    expected = client.chat.completions.create(**request)
    chunks = list(
        client.chat.completions.create(**request, stream=True, stream_options={"include_usage": True})
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected.choices[0].message.content
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1  # really streamed
    finish = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finish[-1] == expected.choices[0].finish_reason and set(finish[:-1]) == {None}
    assert chunks[-1].usage == expected.usage


def stream_chunks(server, route: str, body: dict) -> list[dict]:
    """The JSON of every server-sent event before [DONE], as sent."""
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.stream("POST", f"{server.url}{route}", json=body, headers=headers, timeout=60) as response:
        data = [line.removeprefix("data: ") for line in response.iter_lines() if line.startswith("data: ")]
    assert data[-1] == "[DONE]"
    return [json.loads(item) for item in data[:-1]]


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/completions"])
def test_with_include_usage_every_chunk_but_the_last_has_usage_null(server, route):
    body = {"model": "tiny", "max_tokens": 4, "stream": True, "temperature": 0}
    body |= {"messages": MESSAGES} if "chat" in route else {"prompt": "3+4="}
    *chunks, last = stream_chunks(server, route, {**body, "stream_options": {"include_usage": True}})
    assert chunks and all("usage" in c and c["usage"] is None for c in chunks)
    assert last["choices"] == [] and last["usage"]["completion_tokens"] >= 1
    assert all("usage" not in c for c in stream_chunks(server, route, body))  # not asked: not there


def test_stream_with_a_stop_string_never_sends_the_stop(server):
    client = server.client()
    full = greedy(client, "tuned", max_tokens=16)
    stop = full[5:7]
    expected = greedy(client, "tuned", max_tokens=16, stop=[stop])
    assert expected == full[: full.find(stop)]
    stream = client.chat.completions.create(
        model="tuned", messages=MESSAGES, temperature=0, max_tokens=16, stop=[stop], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == expected


def test_text_completions_for_a_list_of_prompts(server):
    reply = server.client().completions.create(
        model="tuned", prompt=["3+4=", "10-2="], n=2, max_tokens=5, temperature=0, logprobs=0
    )
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    assert reply.choices[0].text == reply.choices[1].text  # greedy: both samples of a prompt agree
    assert reply.usage.prompt_tokens == len("3+4=") + len("10-2=")  # the tiny tokenizer is per character
    assert len(reply.choices[0].logprobs.token_logprobs) == len(reply.choices[0].logprobs.tokens)
    chunks = server.client().completions.create(
        model="tuned", prompt="3+4=", max_tokens=5, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in chunks) == reply.choices[0].text


def test_adapters_load_and_unload_at_runtime(server):
    client = server.client()
    base_before = greedy(client, "tiny")
    second = str(server.tmp / "tuned")  # the same weights under a second name
    response = server.post("/v1/load_lora_adapter", {"lora_name": "second", "lora_path": second})
    assert response.status_code == 200, response.text
    assert [m.id for m in client.models.list().data] == ["tiny", "tuned", "second"]
    assert greedy(client, "second") == greedy(client, "tuned")
    assert (
        server.post("/v1/load_lora_adapter", {"lora_name": "second", "lora_path": second}).status_code == 400
    )
    assert server.post("/v1/unload_lora_adapter", {"lora_name": "second"}).status_code == 200
    with pytest.raises(openai.NotFoundError):
        greedy(client, "second")
    assert server.post("/v1/unload_lora_adapter", {"lora_name": "second"}).status_code == 404
    assert server.post("/v1/unload_lora_adapter", {"lora_name": "tiny"}).status_code == 400
    assert greedy(client, "tiny") == base_before


def test_a_broken_adapter_is_refused_and_changes_nothing(server):
    client = server.client()
    base_before, tuned_before = greedy(client, "tiny"), greedy(client, "tuned")
    broken = server.tmp / "broken"
    make_adapter(broken, seed=2)
    config = json.loads((broken / "adapter_config.json").read_text())
    (broken / "adapter_config.json").write_text(json.dumps({**config, "r": 8}))  # weights are rank 4
    response = server.post("/v1/load_lora_adapter", {"lora_name": "broken", "lora_path": str(broken)})
    assert (
        response.status_code == 400 and "cannot load adapter 'broken'" in response.json()["error"]["message"]
    )
    missing = server.post("/v1/load_lora_adapter", {"lora_name": "x", "lora_path": str(server.tmp / "nope")})
    assert missing.status_code == 400 and "does not exist" in missing.json()["error"]["message"]
    assert [m.id for m in client.models.list().data] == ["tiny", "tuned"]
    assert (greedy(client, "tiny"), greedy(client, "tuned")) == (base_before, tuned_before)


def test_a_failed_first_load_leaves_the_plain_base_model(tmp_path):
    from peft.tuners.tuners_utils import BaseTunerLayer

    from rewardlab.models import load_model
    from rewardlab.serve import ServedModels
    from rewardlab.serve.errors import AdapterError

    model, tokenizer = load_model("tiny")
    models = ServedModels(model, tokenizer, "tiny")
    ids = torch.tensor([[5, 9, 14]])
    with torch.no_grad():
        before = model(ids).logits
    broken = tmp_path / "broken"
    make_adapter(broken)
    config = json.loads((broken / "adapter_config.json").read_text())
    (broken / "adapter_config.json").write_text(json.dumps({**config, "r": 8}))
    with pytest.raises(AdapterError, match="size mismatch"):
        models.load("broken", str(broken))
    assert models.model is model and not any(isinstance(m, BaseTunerLayer) for m in model.modules())
    models.load("good", make_adapter(tmp_path / "good"))
    models.unload("good")  # the last adapter: the plain model comes back
    assert not any(isinstance(m, BaseTunerLayer) for m in models.model.modules())
    with torch.no_grad():
        assert torch.equal(models.model(ids).logits, before)


def test_an_adapter_path_may_be_a_train_run_but_not_a_full_model(tmp_path):
    from rewardlab.models.loading import tiny_model_path
    from rewardlab.serve.errors import AdapterError
    from rewardlab.serve.registry import adapter_dir

    make_adapter(tmp_path / "run" / "final")
    assert adapter_dir(str(tmp_path / "run")) == str(tmp_path / "run" / "final")
    with pytest.raises(AdapterError, match="is a full model, not a LoRA adapter"):
        adapter_dir(str(tiny_model_path("tiny")))


def test_wrong_key_and_unknown_model(server):
    with pytest.raises(openai.AuthenticationError):
        server.client(api_key="wrong").models.list()
    with pytest.raises(openai.AuthenticationError):
        greedy(server.client(api_key="wrong"), "tiny")
    with pytest.raises(openai.NotFoundError) as error:
        greedy(server.client(), "no-such-model")
    assert error.value.code == "model_not_found"


@pytest.mark.parametrize(
    "bad",
    [
        {"temperature": -0.5},
        {"n": 0},
        {"messages": []},
        {"top_p": 0},
        {"max_tokens": 0},
        {"stop": [""]},
        {"top_logprobs": 3},  # without logprobs
        {"top_logprobs": 21, "logprobs": True},
        {"presence_penalty": 2.5},
        {"frequency_penalty": -3},
        {"logit_bias": {"5": 101}},
        {"logit_bias": {"five": 1}},
        {"logit_bias": {"100000": 1}},  # beyond the vocabulary
    ],
)
def test_invalid_parameters_are_400_in_openai_shape(server, bad):
    with pytest.raises(openai.BadRequestError) as error:
        server.client().chat.completions.create(**{"model": "tiny", "messages": MESSAGES, **bad})
    assert error.value.body["type"] == "invalid_request_error" and error.value.body["message"]
    assert error.value.param == next(iter(bad))


class Connection:
    """One HTTP connection, kept: a request after a server that closed it fails instead of reconnecting.

    Bodies are sent as written, so JSON may carry what the openai client cannot encode (a lone surrogate).
    """

    def __init__(self, url: str):
        self.http = http.client.HTTPConnection(url.removeprefix("http://"), timeout=60)

    def post(self, route: str, body: str) -> tuple[int, dict]:
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        self.http.request("POST", route, body=body.encode(), headers=headers)
        response = self.http.getresponse()
        return response.status, json.loads(response.read())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.http.close()


GOOD = json.dumps({"model": "tiny", "messages": MESSAGES, "max_tokens": 2})
CHAT, TEXT = "/v1/chat/completions", "/v1/completions"


@pytest.mark.parametrize(
    "route, body, param",
    [
        (
            CHAT,
            '{"model": "tiny", "messages": [{"role": "user", "content": "\\ud800"}]}',
            "messages.0.content",
        ),
        (
            CHAT,
            '{"model": "tiny", "messages": [{"role": "user", '
            '"content": [{"type": "text", "text": "\\udc00"}]}]}',
            "messages.0.content",
        ),
        (TEXT, '{"model": "tiny", "prompt": "\\ud800"}', "prompt"),
        (TEXT, '{"model": "tiny", "prompt": ["3+4=", "\\ud800"]}', "prompt"),
        (CHAT, '{"model": "\\ud800", "messages": [{"role": "user", "content": "hi"}]}', "model"),
        (TEXT, '{"model": "tiny", "prompt": "hi", "stop": "\\ud800"}', "stop"),
        (TEXT, '{"model": "tiny", "prompt": "hi", "seed": 18446744073709551616}', "seed"),
        (TEXT, '{"model": "tiny", "prompt": "hi", "seed": -9223372036854775809}', "seed"),
        (
            CHAT,
            '{"model": "tiny", "messages": [{"role": "tool", "content": "4"}]}',
            "messages.0.tool_call_id",
        ),
        (CHAT, '{"model": "tiny", "messages": [{"role": "wizard", "content": "hi"}]}', "messages.0.role"),
        ("/v1/unload_lora_adapter", '{"lora_name": "\\ud800"}', "lora_name"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_the_connection_survives(server, route, body, param):
    with Connection(server.url) as connection:
        status, body = connection.post(route, body)
        assert status == 400 and body["error"]["param"] == param, body
        assert body["error"]["type"] == "invalid_request_error"
        assert connection.post(CHAT, GOOD)[0] == 200  # the same connection serves the next request


def test_seeds_at_the_bounds_of_the_generator_are_accepted(server):
    for seed in (-(2**63), 2**64 - 1):
        assert greedy(server.client(), "tiny", max_tokens=2, seed=seed) is not None


def test_unsupported_parameters_are_named(server):
    with pytest.raises(openai.BadRequestError) as error:
        greedy(server.client(), "tiny", tools=[{"type": "function", "function": {"name": "f"}}])
    assert error.value.param == "tools" and "not supported" in error.value.message
    greedy(server.client(), "tiny", tools=[])


class Person(BaseModel):
    name: str = Field(max_length=12)
    age: int = Field(ge=0, le=120)
    member: bool
    level: Literal["low", "mid", "high"]
    tags: list[Literal["a", "b"]] = Field(max_length=2)


def test_structured_outputs_through_the_openai_parse_helper(server):
    """client.chat.completions.parse sends the pydantic model as a strict json_schema; the untrained tiny
    model, sampled at temperature 1, answers with instances of it every time."""
    client = server.client()
    completion = client.chat.completions.parse(
        model="tiny", messages=MESSAGES, response_format=Person, n=16, temperature=1.0, max_tokens=200
    )
    schema = Person.model_json_schema()
    for choice in completion.choices:
        assert choice.finish_reason == "stop" and isinstance(choice.message.parsed, Person)
        jsonschema.validate(json.loads(choice.message.content), schema)
    assert len({c.message.content for c in completion.choices}) > 8
    with pytest.raises(openai.LengthFinishReasonError):  # cut at max_tokens: said, not parsed as valid
        client.chat.completions.parse(model="tiny", messages=MESSAGES, response_format=Person, max_tokens=6)


def test_json_object_streams_what_it_returns_on_both_routes(server):
    client = server.client()
    body = dict(
        model="tiny", messages=MESSAGES, response_format={"type": "json_object"}, seed=5, max_tokens=64
    )
    whole = client.chat.completions.create(**body, n=4)
    stream = client.chat.completions.create(**body, n=4, stream=True)
    texts, reasons = [""] * 4, [None] * 4
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            reasons[choice.index] = choice.finish_reason or reasons[choice.index]
    assert texts == [c.message.content for c in whole.choices]
    assert reasons == [c.finish_reason for c in whole.choices]
    for choice in whole.choices:
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(choice.message.content), dict)
    text = server.post(TEXT, {"model": "tiny", "prompt": "{", "max_tokens": 64, "n": 4, "seed": 1,
                              "response_format": {"type": "json_object"}}).json()  # fmt: skip
    assert any(c["finish_reason"] == "stop" for c in text["choices"])
    for choice in text["choices"]:
        if choice["finish_reason"] == "stop":
            assert isinstance(json.loads(choice["text"]), dict)


def json_schema(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}


@pytest.mark.parametrize(
    "response_format, message",
    [
        ({"type": "json_schema"}, 'json_schema: must be an object with the "schema" to follow'),
        ({"type": "yaml"}, "type: must be one of text, json_object, json_schema"),
        (
            json_schema({"type": "object", "properties": {"age": {"type": "int"}}}),
            "json_schema.schema: 'int' is not valid under any of the given schemas (at properties.age.type)",
        ),
        (
            json_schema({"type": "array", "uniqueItems": True}),
            "json_schema.schema: uniqueItems cannot be enforced while decoding",
        ),
        (
            json_schema({"$ref": "#/$defs/person"}),
            "json_schema.schema: cannot be compiled to a grammar: Cannot find field '$defs'",
        ),
        (json_schema({"enum": ["é"]}), "json_schema.schema: needs text this tokenizer cannot write"),
    ],
)
def test_malformed_response_formats_are_a_400_of_one_line(server, response_format, message):
    """Malformed, unenforceable, uncompilable, and (found while decoding) unwritable with this tokenizer."""
    body = json.dumps(
        {"model": "tiny", "messages": MESSAGES, "max_tokens": 8, "response_format": response_format}
    )
    with Connection(server.url) as connection:
        status, answer = connection.post(CHAT, body)
        assert status == 400 and answer["error"]["param"] == "response_format", answer
        assert answer["error"]["message"].startswith(f"response_format: {message}"), answer
        assert "\n" not in answer["error"]["message"]
        assert connection.post(CHAT, GOOD)[0] == 200


def test_a_tool_message_naming_its_call_is_accepted(server):
    messages = [
        *MESSAGES,
        {"role": "assistant", "content": "19"},
        {"role": "tool", "content": "19", "tool_call_id": "c1"},
    ]
    reply = server.client().chat.completions.create(model="tiny", messages=messages, max_tokens=2)
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_an_unexpected_error_in_a_route_is_a_500_on_a_connection_that_survives(server, monkeypatch):
    def broken(messages):
        raise TypeError("the renderer broke")

    monkeypatch.setattr(server.engine.sampler.renderer, "prompt_ids", broken)
    with Connection(server.url) as connection:
        status, body = connection.post(CHAT, GOOD)
        assert status == 500 and "the renderer broke" in body["error"]["message"]
        monkeypatch.undo()
        assert connection.post(CHAT, GOOD)[0] == 200


def test_emoji_only_content_is_generated_from_on_both_routes(server):
    """The character tokenizer reads any character beyond printable ASCII as <unk>: a real token, so an
    emoji-only prompt is a prompt of one token on either route, not an empty one."""
    client, tokenizer = server.client(), server.engine.models.tokenizer
    assert tokenizer("😀")["input_ids"] == [tokenizer.unk_token_id]
    text = client.completions.create(model="tiny", prompt="😀", max_tokens=2, temperature=0)
    assert text.usage.prompt_tokens == 1 and text.usage.completion_tokens >= 1

    def chat(content):
        messages = [{"role": "user", "content": content}]
        return client.chat.completions.create(model="tiny", messages=messages, max_tokens=2, temperature=0)

    assert chat("😀").usage.prompt_tokens == chat("").usage.prompt_tokens + 1


def test_a_prompt_beyond_the_context_is_refused(server):
    client = server.client()
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "7" * 600}])
    assert error.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=510)  # prompt + 510 > 512
    assert error.value.code == "context_length_exceeded"


def test_a_crash_in_generation_is_a_500_and_the_server_goes_on(server, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr(server.engine, "_decode", broken)
    with pytest.raises(openai.InternalServerError) as error:
        greedy(server.client(), "tiny")
    assert "out of memory, say" in error.value.message
    monkeypatch.undo()
    response = httpx.post(
        f"{server.url}/v1/chat/completions",
        content=b"{not json",
        headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]
    assert greedy(server.client(), "tiny")  # after every bad request above, a good one still succeeds


def run_concurrently(server, models: list[str]) -> list[str]:
    client = server.client()
    barrier = threading.Barrier(len(models))
    results: list[str | None] = [None] * len(models)

    def ask(index: int) -> None:
        barrier.wait()
        results[index] = greedy(client, models[index], max_tokens=8)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(models))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(r is not None for r in results)
    return results


def test_concurrent_requests_are_batched(server):
    before = server.metrics()
    results = run_concurrently(server, ["tiny"] * 8)
    after = server.metrics()
    assert after["requests"] - before["requests"] == 8
    assert after["batches"] - before["batches"] < 8
    assert len(set(results)) == 1  # same prompt, greedy


@pytest.fixture(scope="module")
def static_server(tmp_path_factory):
    """The batch-at-a-time engine (what models the fused decoder does not run get)."""
    tmp = tmp_path_factory.mktemp("static")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    engine = build_engine(
        "tiny",
        {"tuned": make_adapter(tmp / "tuned")},
        max_batch_size=32,
        batch_wait_ms=50,
        scheduler="static",
    )
    assert engine.scheduler == "static"
    running = Server(engine, tmp).start()
    yield running
    running.stop()
    torch.set_num_threads(threads)


@pytest.mark.parametrize("scheduler, mix", [("continuous", True), ("static", False), ("static", True)])
def test_base_and_adapter_requests_answer_as_alone_batched_apart_or_mixed(
    request, monkeypatch, scheduler, mix
):
    server = request.getfixturevalue("server" if scheduler == "continuous" else "static_server")
    assert server.engine.scheduler == scheduler
    monkeypatch.setattr(server.engine, "mix_adapters", mix)
    alone = {model: greedy(server.client(), model, max_tokens=8) for model in ("tiny", "tuned")}
    before = server.metrics()
    models = ["tiny", "tuned"] * 3
    results = run_concurrently(server, models)
    after = server.metrics()
    assert (after["mixed_batches"] > before["mixed_batches"]) == mix
    assert after["batches"] - before["batches"] < len(models)
    assert results == [alone[model] for model in models]


def job(temperature=1.0, seed=None, model="tiny", rows=1, **extra) -> Job:
    return Job(model, [[1]] * rows, 1, temperature, 1.0, 8, [], seed, 0.0, None, **extra)


def test_batches_group_compatible_requests_oldest_first():
    pending = [job(), job(temperature=0), job(model="tuned"), job(seed=1), job(), job(rows=40)]
    first = take_batch(pending, max_rows=32, mix_adapters=True)
    assert [j.temperature for j in first] == [1.0, 1.0, 1.0] and {j.model for j in first} == {"tiny", "tuned"}
    assert len(take_batch(pending, max_rows=32, mix_adapters=True)) == 1  # temperature 0
    assert take_batch(pending, max_rows=32, mix_adapters=True)[0].seed == 1  # a seeded request goes alone
    assert take_batch(pending, max_rows=32, mix_adapters=True)[0].rows == 40  # too big, still served
    separate = [job(), job(model="tuned"), job()]
    assert [j.model for j in take_batch(separate, 32, mix_adapters=False)] == ["tiny", "tiny"]
    adjusted = [job(), job(presence_penalty=1.0), job(logit_bias={3: 1.0}), job(top_logprobs=5), job()]
    assert len(take_batch(adjusted, 32, mix_adapters=False)) == 3  # alternatives are read, not sampled
    formats = [
        job(),
        job(response_format={"type": "json_object"}),
        job(),
        job(response_format={"type": "json_object"}),
    ]
    assert [j.response_format for j in take_batch(formats, 32, mix_adapters=False)] == [None, None]
    assert len(take_batch(formats, 32, mix_adapters=False)) == 2  # the same format shares a batch


def test_text_deltas_hold_back_what_could_start_a_stop_string(tiny):
    _, tokenizer = tiny
    ids = tokenizer("abcdef")["input_ids"]
    deltas = TextDeltas(tokenizer, stop_ids={tokenizer.eos_token_id}, stop=["de"])
    sent = [deltas.push(token) for token in ids[:4]]  # "abcd": "d" may begin "de"
    assert "".join(sent) == "abc"
    assert deltas.finish("abc") == ""  # the sampler cut the text at "de"
    plain = TextDeltas(tokenizer, stop_ids={tokenizer.eos_token_id}, stop=[])
    assert [plain.push(t) for t in [*ids[:2], tokenizer.eos_token_id, ids[2]]] == ["a", "b", "", ""]


runner = CliRunner()


def test_serve_help_and_bad_adapter_arguments(tmp_path):
    assert runner.invoke(cli_app, ["serve", "--help"]).exit_code == 0
    for adapter, expected in [
        ("no-equals-sign", "--adapter expects name=path, got 'no-equals-sign'"),
        (f"x={tmp_path / 'missing'}", "adapter path does not exist"),
        ("tiny=somewhere", "is already the base model's name"),
    ]:
        result = runner.invoke(cli_app, ["serve", "--model", "tiny", "--adapter", adapter])
        lines = [line for line in result.output.strip().splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert lines[0].startswith("error: ") and expected in lines[0], result.output


def test_eval_and_compare_run_against_our_own_server(server, tmp_path, monkeypatch):
    """The loop over HTTP: `rewardlab eval` and `rewardlab compare` on what `rewardlab serve` serves."""
    monkeypatch.setenv("SERVE_TEST_KEY", KEY)
    endpoints = tmp_path / "endpoints.toml"
    table = '[endpoints.{}]\nbase_url = "{}/v1"\nmodel = "{}"\napi_key_env = "SERVE_TEST_KEY"\n'
    served = {"base": "tiny", "tuned": "tuned"}  # alias -> the name the server knows
    endpoints.write_text("".join(table.format(alias, server.url, name) for alias, name in served.items()))
    runs = tmp_path / "runs"
    common = ["--env", "arithmetic", "-n", "6", "-r", "2", "--runs-dir", str(runs)]
    common += ["--endpoints", str(endpoints)]
    before = server.metrics()["requests"]

    result = CliRunner().invoke(cli_app, ["eval", "--model", "tuned", *common])
    assert result.exit_code == 0, result.output
    [summary_file] = runs.glob("eval-*/summary.json")
    summary = json.loads(summary_file.read_text())
    assert summary["num_rollouts"] == 12 and summary["errors"] == 0
    assert summary["requests"] >= 6 and summary["latency_p95_s"] >= summary["latency_p50_s"] > 0
    assert server.metrics()["requests"] - before == summary["requests"]  # every request reached the server

    result = CliRunner().invoke(cli_app, ["compare", "base", "tuned", *common, "--data", "held-out,fresh"])
    assert result.exit_code == 0, result.output
    assert "held-out" in result.output and "fresh" in result.output and "latency" in result.output


# -- facing a network: runtime adapters confined, limits on what one client may ask, the key ----------------


def forbidden(response: httpx.Response, code: str = "adapter_path_forbidden") -> str:
    assert response.status_code == 403, response.text
    assert response.json()["error"]["code"] == code
    return response.json()["error"]["message"]


def test_runtime_adapter_paths_outside_the_adapter_dirs_are_refused(server, tmp_path):
    outside = make_adapter(tmp_path / "outside")
    load = lambda path: server.post("/v1/load_lora_adapter", {"lora_name": "x", "lora_path": str(path)})  # noqa: E731
    message = forbidden(load(outside))
    assert "must lie inside the adapter directories" in message
    # Nothing is said about paths outside: a missing one reads as an existing one.
    assert forbidden(load(tmp_path / "missing")) == message.replace(outside, str(tmp_path / "missing"))
    forbidden(load(server.tmp / ".." / tmp_path.name / "outside"))  # .. out of the directory
    forbidden(load("/etc"))
    link = server.tmp / "link-out"
    link.symlink_to(tmp_path / "outside")  # a symlink inside, pointing out
    try:
        forbidden(load(link))
        forbidden(load(f"{link}/../tuned"))  # resolved through the link: outside too
    finally:
        link.unlink()
    assert [m.id for m in server.client().models.list().data] == ["tiny", "tuned"]


def test_an_adapter_inside_whose_files_lead_outside_is_refused(server, tmp_path):
    outside = tmp_path / "outside"
    make_adapter(outside)
    smuggled = server.tmp / "smuggled"  # an adapter inside whose weights are a link to a file outside
    smuggled.mkdir()
    for file in outside.iterdir():
        if file.suffix == ".safetensors":
            (smuggled / file.name).symlink_to(file)
        else:
            (smuggled / file.name).write_bytes(file.read_bytes())
    run = server.tmp / "run-with-outside-final"
    run.mkdir()
    (run / "final").symlink_to(tmp_path / "outside")
    for path in (smuggled, run):
        response = server.post("/v1/load_lora_adapter", {"lora_name": "x", "lora_path": str(path)})
        assert "leads outside the adapter directories" in forbidden(response)
    assert [m.id for m in server.client().models.list().data] == ["tiny", "tuned"]


def test_the_key_is_compared_in_constant_time(server, monkeypatch):
    import hmac

    compared = []
    original = hmac.compare_digest

    def compare(a, b):
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(hmac, "compare_digest", compare)
    with pytest.raises(openai.AuthenticationError):
        server.client(api_key="wrong").models.list()
    assert compared == [(b"wrong", KEY.encode())]


LIMITS = dict(
    max_request_bytes=4000, max_n=2, max_tokens=8, max_concurrent_requests=3, max_queued_completions=4
)


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    """A server with low limits, runtime adapters off, and an adapter given at startup from anywhere."""
    from rewardlab.serve.limits import ServeLimits

    tmp = tmp_path_factory.mktemp("limited")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    engine = build_engine("tiny", {"tuned": make_adapter(tmp / "tuned")}, max_batch_size=4, batch_wait_ms=0)
    running = Server(engine, tmp, limits=ServeLimits(**LIMITS)).start()
    yield running
    running.stop()
    torch.set_num_threads(threads)


def test_runtime_adapters_are_off_unless_allowed_and_startup_adapters_still_serve(limited):
    for route, body in [
        ("/v1/load_lora_adapter", {"lora_name": "x", "lora_path": str(limited.tmp / "tuned")}),
        ("/v1/unload_lora_adapter", {"lora_name": "tuned"}),
    ]:
        assert "--allow-runtime-adapters" in forbidden(limited.post(route, body), "runtime_adapters_disabled")
    assert [m.id for m in limited.client().models.list().data] == ["tiny", "tuned"]
    assert greedy(limited.client(), "tuned", max_tokens=4) != greedy(limited.client(), "tiny", max_tokens=4)


def error_of(response: httpx.Response) -> tuple[int, str | None, str | None]:
    error = response.json()["error"]
    return response.status_code, error["code"], error["param"]


def test_a_body_over_the_limit_is_413_declared_or_chunked(limited):
    def body(size: int) -> bytes:  # a short request padded with whitespace to ``size`` bytes
        request = json.dumps({"model": "tiny", "max_tokens": 2, "messages": MESSAGES}).encode()
        return request + b" " * (size - len(request))

    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    url = f"{limited.url}/v1/chat/completions"
    assert httpx.post(url, content=body(4000), headers=headers).status_code == 200  # at the limit
    big = body(4001)
    assert error_of(httpx.post(url, content=big, headers=headers)) == (413, "request_too_large", None)

    def chunks():  # no Content-Length: the server counts as it reads
        yield from (big[i : i + 1000] for i in range(0, len(big), 1000))

    response = httpx.post(url, content=chunks(), headers=headers)
    assert error_of(response) == (413, "request_too_large", None)
    assert "limit of 4000 bytes" in response.json()["error"]["message"]
    with Connection(limited.url) as connection:  # refused, and the connection still serves
        assert connection.post(CHAT, big.decode())[0] == 413
        assert connection.post(CHAT, GOOD)[0] == 200


def test_n_and_max_tokens_over_their_limits_are_400_naming_the_field(limited):
    post = lambda route, **extra: limited.post(route, {"model": "tiny", **extra})  # noqa: E731
    chat = {"messages": MESSAGES}
    assert error_of(post("/v1/chat/completions", **chat, n=3)) == (400, "invalid_request", "n")
    assert error_of(post("/v1/completions", prompt="1+1=", n=3)) == (400, "invalid_request", "n")
    assert error_of(post("/v1/chat/completions", **chat, max_tokens=9)) == (
        400,
        "invalid_request",
        "max_tokens",
    )
    response = post("/v1/chat/completions", **chat, max_completion_tokens=9)
    assert error_of(response) == (400, "invalid_request", "max_completion_tokens")
    assert "at most 8 tokens per completion" in response.json()["error"]["message"]
    # One request asking for more completions than the queue holds (3 prompts x 2) can never be served.
    assert error_of(post("/v1/completions", prompt=["1", "2", "3"], n=2)) == (400, "invalid_request", "n")
    # Without max_tokens, chat gets the rest of the context, capped at the limit.
    reply = limited.client().chat.completions.create(model="tiny", messages=MESSAGES, n=2, temperature=1)
    assert reply.usage.completion_tokens <= 2 * 8


def send_in_background(
    server, body: dict, route: str = "/v1/chat/completions"
) -> tuple[threading.Thread, list]:
    answers: list = []
    thread = threading.Thread(target=lambda: answers.append(server.post(route, body)), daemon=True)
    thread.start()
    return thread, answers


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_too_many_requests_in_flight_and_a_full_queue_are_429_with_retry_after(limited):
    engine = limited.engine
    first = {"model": "tiny", "messages": MESSAGES, "max_tokens": 2, "n": 2}
    engine._lock.acquire()  # the model is busy between two steps: requests stay queued and in flight
    try:
        background = [send_in_background(limited, first)]  # queued: 2 completions waiting
        wait_for(lambda: engine.queued_completions == 2, "the queue")
        # 2 prompts x n = 2 more would make 6 waiting, over the 4 allowed.
        full = limited.post(
            "/v1/completions", {"model": "tiny", "prompt": ["1", "2"], "n": 2, "max_tokens": 2}
        )
        assert error_of(full) == (429, "rate_limit_exceeded", None) and full.headers["retry-after"] == "1"
        assert "queue is full" in full.json()["error"]["message"]
        for queued in (3, 4):  # the second and third in flight
            background.append(send_in_background(limited, {**first, "n": 1}))
            wait_for(lambda queued=queued: engine.queued_completions == queued, "the next request")
        busy = limited.post("/v1/chat/completions", {**first, "n": 1})
        assert error_of(busy) == (429, "rate_limit_exceeded", None) and busy.headers["retry-after"] == "1"
        assert "at most 3 at once" in busy.json()["error"]["message"]
        assert httpx.get(f"{limited.url}/health").status_code == 200  # never limited
    finally:
        engine._lock.release()
    for thread, answers in background:
        thread.join(timeout=60)
        assert answers and answers[0].status_code == 200, answers
    assert limited.post("/v1/chat/completions", first).status_code == 200  # served again once they are done


def test_serve_flags_reach_the_server_and_bad_ones_are_one_line(tmp_path, monkeypatch):
    from types import SimpleNamespace

    import rewardlab.serve.server as server_module

    started, built = {}, {}

    def fake_engine(*args, **kwargs):
        built.update(kwargs)
        models = SimpleNamespace(names=["tiny"], warnings=[])
        return SimpleNamespace(
            models=models, scheduler=kwargs["scheduler"], max_batch_size=kwargs["max_batch_size"]
        )

    monkeypatch.setattr(server_module, "build_engine", fake_engine)
    monkeypatch.setattr(server_module, "run_server", lambda engine, **kwargs: started.update(kwargs))
    monkeypatch.delenv("REWARDLAB_API_KEY", raising=False)
    adapters = tmp_path / "adapters"
    adapters.mkdir()
    base = ["serve", "--model", "tiny", "--port", "0"]
    result = runner.invoke(
        cli_app,
        [*base, "--host", "0.0.0.0", "--allow-runtime-adapters", "--adapter-dir", str(adapters)]
        + ["--set", "max_n=4", "--set", "max_request_bytes=1000"],
    )
    assert result.exit_code == 0, result.output
    assert started["adapter_dirs"] == [str(adapters.resolve())]
    assert started["limits"].max_n == 4 and started["limits"].max_request_bytes == 1000
    assert started["limits"].max_concurrent_requests == 256  # the defaults
    assert "without an API key: anyone who can reach it can generate and load adapters from" in result.output
    assert "continuous batching of up to 128 completions" in result.output  # the defaults
    result = runner.invoke(cli_app, [*base, "--scheduler", "static", "--prefill-chunk-tokens", "64"])
    assert result.exit_code == 0 and "static batching" in result.output
    assert built["scheduler"] == "static" and built["prefill_chunk"] == 64
    started.clear()
    assert runner.invoke(cli_app, base).exit_code == 0 and started["adapter_dirs"] is None  # off by default
    for flags, expected in [
        (["--allow-runtime-adapters"], "allow_runtime_adapters needs the directories adapters may be loaded"),
        (["--adapter-dir", str(adapters)], "adapter_dirs only matter with runtime adapters"),
        (["--allow-runtime-adapters", "--adapter-dir", str(tmp_path / "nope")], "--adapter-dir is not a dir"),
        (["--set", "max_n=0"], "max_n"),
        (["--scheduler", "continous"], "config field 'scheduler': Input should be 'continuous' or 'static'"),
    ]:
        result = runner.invoke(cli_app, [*base, *flags])
        lines = [line for line in result.output.strip().splitlines() if line.strip()]
        assert result.exit_code == 2 and len(lines) == 1, result.output
        assert lines[0].startswith("error: ") and expected in lines[0], result.output
