"""The HTTP sampler against a stub OpenAI-compatible server: retries, errors, concurrency, n, evaluation.

The stub is a FastAPI app served by uvicorn on 127.0.0.1 (a free port) in a background thread. It can be
told to fail its first k requests with a status, or to answer them slowly, and it counts the requests in
flight. Its models: ``good`` solves arithmetic, ``sloppy`` is off by one on odd results, ``counter``
says how many times it has spoken, ``echo`` says "ok".
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
import time
from dataclasses import dataclass, field

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.config import EvalConfig, TrainConfig, load_config, load_endpoints
from rewardlab.envs import MultiTurnEnv, load_environment
from rewardlab.errors import ConfigError
from rewardlab.eval.evaluate import evaluate
from rewardlab.rubrics import Rubric, XMLParser
from rewardlab.runs import RunStore
from rewardlab.sampling.base import Prompt, Sampler, SamplingParams
from rewardlab.sampling.openai_compat import EndpointError, OpenAISampler

ARITHMETIC = {"name": "arithmetic", "args": {"num_train": 20, "num_eval": 20}}


@dataclass
class Script:
    """How the stub behaves, and what it saw."""

    fail_first: int = 0  # the first k requests get fail_status
    fail_status: int = 500
    slow_first: int = 0  # the first k requests wait slow_s before answering
    slow_s: float = 1.0
    delay_s: float = 0.0  # every request waits this long (to overlap them)
    ignore_n: bool = False  # one choice, whatever n asks
    finish_length: bool = False
    api_key: str | None = None  # when set, any other key gets 401
    requests: list[dict] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0


def solve(problem: str) -> int:
    a, op, b = re.search(r"(\d+)\s*([-+*])\s*(\d+)", problem).groups()
    return {"+": int(a) + int(b), "-": int(a) - int(b), "*": int(a) * int(b)}[op]


def reply(model: str, messages: list[dict]) -> str | None:
    question = next(m["content"] for m in reversed(messages) if m["role"] == "user")
    if model == "good":
        return f"<answer>{solve(question)}</answer>"
    if model == "sloppy":
        result = solve(question)
        return f"<answer>{result + result % 2}</answer>"
    if model == "counter":
        return f"<answer>{sum(m['role'] == 'assistant' for m in messages) + 1}</answer>"
    if model == "echo":
        return "ok"
    return None


class StubServer:
    def __init__(self):
        self.script = Script()
        api = FastAPI()
        api.post("/v1/chat/completions")(self.chat)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))  # a free port, held from now on: no race with other processes
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        config = uvicorn.Config(api, log_level="error", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert time.monotonic() < deadline, "stub server did not start"
            time.sleep(0.01)

    async def chat(self, request: Request):
        script = self.script
        body = await request.json()
        script.requests.append(body)
        script.arrivals.append(time.perf_counter())
        number = len(script.requests)
        script.in_flight += 1
        script.max_in_flight = max(script.max_in_flight, script.in_flight)
        try:
            await asyncio.sleep(script.delay_s + (script.slow_s if number <= script.slow_first else 0))
            if script.api_key and request.headers.get("authorization") != f"Bearer {script.api_key}":
                return error(401, "Incorrect API key provided")
            if number <= script.fail_first:
                return error(script.fail_status, f"stub failure {number}")
            text = reply(body["model"], body["messages"])
            if text is None:
                return error(404, f"The model `{body['model']}` does not exist.")
            choices = 1 if script.ignore_n else body.get("n", 1)
            return {
                "id": f"stub-{number}",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "length" if script.finish_length else "stop",
                    }
                    for i in range(choices)
                ],
            }
        finally:
            script.in_flight -= 1

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=5)


def error(status: int, message: str) -> JSONResponse:
    """An error body shaped like OpenAI's (and vLLM's)."""
    return JSONResponse({"error": {"message": message, "type": "error", "code": status}}, status_code=status)


@pytest.fixture(scope="module")
def server():
    stub = StubServer()
    yield stub
    stub.stop()


@pytest.fixture
def stub(server):
    server.script = Script()
    return server


def sampler_for(stub, model="echo", **kwargs) -> OpenAISampler:
    kwargs = {"backoff_s": 0.02, "timeout_s": 5.0, **kwargs}
    return OpenAISampler(stub.url, model, **kwargs)


def ask(sampler, count=1, **params) -> list[list]:
    prompts = [Prompt([{"role": "user", "content": f"{i}+1="}]) for i in range(count)]
    return sampler.generate(prompts, SamplingParams(**params))


def one_line(error: Exception) -> str:
    text = str(error)
    assert "\n" not in text, text
    return text


# -- the sampler -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [429, 500, 503])
def test_retries_with_backoff_recover(stub, status):
    stub.script.fail_first, stub.script.fail_status = 3, status
    with sampler_for(stub, max_retries=4, backoff_s=0.04) as sampler:
        [[generation]] = ask(sampler)
    assert generation.text == "ok" and generation.finish_reason == "stop" and generation.latency_s > 0
    assert len(stub.script.requests) == 4
    assert (sampler.stats.retried, sampler.stats.retries, sampler.stats.failed) == (1, 3, 0)
    assert len(sampler.stats.latencies_s) == 1  # the successful attempt only
    gaps = [b - a for a, b in zip(stub.script.arrivals, stub.script.arrivals[1:], strict=False)]
    # Retry k waits between half and all of backoff_s * 2**k: each gap at least that half.
    for k, gap in enumerate(gaps):
        assert gap >= 0.04 * 2**k / 2 - 0.005, gaps


def test_exhausted_retries_are_one_line_naming_the_status(stub):
    stub.script.fail_first, stub.script.fail_status = 100, 503
    with sampler_for(stub, max_retries=2) as sampler, pytest.raises(EndpointError) as caught:
        ask(sampler)
    message = one_line(caught.value)
    assert message.startswith(f"endpoint {stub.url}: gave up after 3 attempts: server error (503)")
    assert "stub failure 3" in message
    assert len(stub.script.requests) == 3 and sampler.stats.failed == 1


def test_client_errors_fail_at_once_with_the_servers_message(stub, monkeypatch):
    monkeypatch.delenv("STUB_KEY", raising=False)
    with sampler_for(stub, model="no-such-model") as sampler, pytest.raises(EndpointError) as caught:
        ask(sampler)
    assert one_line(caught.value) == (
        f"endpoint {stub.url}: model 'no-such-model' not found (404): "
        "The model `no-such-model` does not exist."
    )
    stub.script = Script(api_key="secret")
    with sampler_for(stub, api_key_env="STUB_KEY") as sampler, pytest.raises(EndpointError) as caught:
        ask(sampler)
    message = one_line(caught.value)
    assert "unauthorized (401): Incorrect API key provided" in message and "$STUB_KEY" in message
    stub.script = Script(fail_first=1, fail_status=400)
    with sampler_for(stub) as sampler, pytest.raises(EndpointError) as caught:
        ask(sampler)
    assert "rejected the request (400): stub failure 1" in one_line(caught.value)
    assert len(stub.script.requests) == 1 and sampler.stats.retries == 0  # 4xx: never retried


def test_the_key_comes_from_the_named_variable(stub, monkeypatch):
    monkeypatch.setenv("STUB_KEY", "secret")
    stub.script.api_key = "secret"
    with sampler_for(stub, api_key_env="STUB_KEY") as sampler:
        assert ask(sampler)[0][0].text == "ok"


def test_timeouts_are_retried(stub):
    stub.script.slow_first, stub.script.slow_s = 1, 1.0
    with sampler_for(stub, timeout_s=0.2, max_retries=2) as sampler:
        [[generation]] = ask(sampler)
    assert generation.text == "ok" and sampler.stats.retries == 1
    stub.script = Script(slow_first=10, slow_s=1.0)
    with sampler_for(stub, timeout_s=0.1, max_retries=1) as sampler, pytest.raises(EndpointError) as caught:
        ask(sampler)
    assert "gave up after 2 attempts: no response within 0.1s (timeout)" in one_line(caught.value)


def test_nothing_listening_is_a_connection_error(stub):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        sampler = OpenAISampler(f"http://127.0.0.1:{port}/v1", "x", max_retries=1, backoff_s=0.01)
        with sampler, pytest.raises(EndpointError) as caught:
            ask(sampler)
    assert "gave up after 2 attempts: cannot connect" in one_line(caught.value)


def test_concurrency_limit_is_respected(stub):
    stub.script.delay_s = 0.05
    with sampler_for(stub, max_concurrency=3) as sampler:
        results = ask(sampler, count=12)
    assert [len(r) for r in results] == [1] * 12
    assert stub.script.max_in_flight == 3


def test_n_choices_and_the_fallback_for_servers_that_ignore_n(stub):
    params = {"n": 3, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 7, "stop": ["</answer>"], "seed": 5}
    with sampler_for(stub) as sampler:
        [generations] = ask(sampler, **params)
        assert len(generations) == 3 and len(stub.script.requests) == 1
        sent = stub.script.requests[0]
        assert (sent["n"], sent["temperature"], sent["top_p"], sent["max_tokens"]) == (3, 0.7, 0.9, 7)
        assert sent["stop"] == ["</answer>"] and sent["seed"] == 5
        stub.script = Script(ignore_n=True)
        [generations] = ask(sampler, **params)
        # one request asked for 3 and got 1; two single requests made up the rest, each its own seed
        assert len(generations) == 3 and len(stub.script.requests) == 3
        assert [r.get("n", 1) for r in stub.script.requests] == [3, 1, 1]
        assert len({r["seed"] for r in stub.script.requests[1:]}) == 2
        stub.script = Script(ignore_n=True)
        ask(sampler, **params)
        assert [r.get("n", 1) for r in stub.script.requests] == [1, 1, 1]  # remembered


def test_the_response_format_is_sent_along(stub):
    response_format = {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "object"}}}
    with sampler_for(stub) as sampler:
        ask(sampler, response_format=response_format)
        ask(sampler)
    assert stub.script.requests[0]["response_format"] == response_format
    assert "response_format" not in stub.script.requests[1]


def test_finish_reason_length_marks_the_rollout_truncated(stub):
    stub.script.finish_length = True
    env = load_environment("arithmetic", **ARITHMETIC["args"])
    with sampler_for(stub, model="good") as sampler:
        assert isinstance(sampler, Sampler) and not hasattr(sampler, "renderer")
        rollouts = env.rollout(sampler, env.examples("eval", 3), SamplingParams(n=2))
    assert len(rollouts) == 6 and all(r.truncated for r in rollouts)
    assert all(r.completion_ids is None for r in rollouts)  # text only


def test_a_base_url_without_a_scheme_is_refused():
    with pytest.raises(EndpointError, match="must start with http:// or https://"):
        OpenAISampler("localhost:8000/v1", "x")


# -- evaluation through an endpoint ------------------------------------------------------------------------


def endpoint_config(stub, tmp_path, model="good", **fields) -> EvalConfig:
    return EvalConfig.model_validate(
        {
            "model": {"name_or_path": model, "base_url": stub.url, "backoff_s": 0.01, **fields},
            "env": ARITHMETIC,
            "num_examples": 5,
            "rollouts_per_example": 2,
            "runs_dir": str(tmp_path),
        }
    )


def test_evaluate_an_endpoint_end_to_end(stub, tmp_path):
    stub.script.fail_first, stub.script.fail_status = 2, 429
    result = evaluate(endpoint_config(stub, tmp_path))
    summary = result.summary
    assert summary["mean_reward"] == pytest.approx(1.1)  # correct (1) + format (0.1)
    assert summary["pass@1"] == 1.0 and summary["pass@2"] == 1.0 and summary["errors"] == 0
    assert summary["latency_per"] == "request" and summary["requests"] == 10
    assert 0 < summary["latency_p50_s"] <= summary["latency_p95_s"]
    assert (summary["requests_retried"], summary["retries"], summary["requests_failed"]) == (2, 2, 0)
    assert summary["endpoint"] == stub.url and summary["model"] == "good"
    store = RunStore(tmp_path)
    run = store.get(result.run_id)
    assert run.kind == "eval" and run.status == "completed" and run.summary["requests"] == 10
    assert len(store.rollouts(run.id, phase="eval")) == 10


def test_an_endpoint_that_gives_up_leaves_a_failed_run(stub, tmp_path):
    stub.script.fail_first, stub.script.fail_status = 100, 500
    with pytest.raises(EndpointError, match="gave up after 2 attempts"):
        evaluate(endpoint_config(stub, tmp_path, max_retries=1))
    [run] = RunStore(tmp_path).list(kind="eval")
    assert run.status == "failed" and run.summary["requests_failed"] >= 1
    assert "server error (500)" in run.summary["error"]


class CountingEnv(MultiTurnEnv):
    """The model says one number a turn; the environment answers "next" until three are said."""

    def initial_state(self, example):
        return {"said": []}

    def env_response(self, messages, state):
        state["said"].append(self.parser.parse_answer(messages[-1]["content"]))
        state["done"] = len(state["said"]) == 3
        return [] if state["done"] else [{"role": "user", "content": "next"}]

    def is_completed(self, messages, state):
        return state.get("done", False)


def counted_to_three(state) -> float:
    return 1.0 if state["said"] == ["1", "2", "3"] else 0.0


def test_a_multi_turn_environment_through_the_endpoint(stub, tmp_path):
    parser = XMLParser()
    env = CountingEnv(
        eval_dataset=[{"prompt": f"count from 1 (game {i})", "answer": "3"} for i in range(3)],
        parser=parser,
        rubric=Rubric([counted_to_three], parser=parser, isolation="inline"),
        max_turns=5,
    )
    result = evaluate(endpoint_config(stub, tmp_path, model="counter"), env=env)
    assert result.summary["mean_reward"] == 1.0 and result.summary["requests"] == 3 * 2 * 3
    assert all(s.rollout.num_turns == 3 for s in result.scored)
    # every turn sent the whole conversation so far
    assert sorted({len(r["messages"]) for r in stub.script.requests}) == [1, 3, 5]


# -- configuration and the command line ----------------------------------------------------------------


def write_endpoints(tmp_path, stub) -> str:
    path = tmp_path / "endpoints.toml"
    path.write_text(
        f'[endpoints.base]\nbase_url = "{stub.url}"\nmodel = "sloppy"\nbackoff_s = 0.01\n\n'
        f'[endpoints.tuned]\nbase_url = "{stub.url}"\nmodel = "good"\nmax_concurrency = 4\n'
    )
    return str(path)


def test_endpoints_file(stub, tmp_path):
    endpoints = load_endpoints(write_endpoints(tmp_path, stub))
    assert endpoints["base"].name_or_path == "sloppy" and endpoints["base"].base_url == stub.url
    assert endpoints["tuned"].max_concurrency == 4 and endpoints["tuned"].timeout_s == 120.0
    bad = tmp_path / "bad.toml"
    bad.write_text('[endpoints.x]\nmodel = "m"\n')
    with pytest.raises(ConfigError, match=r"bad.toml \[endpoints.x\]: missing base_url"):
        load_endpoints(bad)
    bad.write_text('[endpoints.x]\nbase_url = "http://h/v1"\nmodel = "m"\ntimeout = 3\n')
    with pytest.raises(ConfigError, match="unknown config field 'timeout' \\(did you mean 'timeout_s'"):
        load_endpoints(bad)


def test_training_refuses_an_endpoint():
    with pytest.raises(ConfigError, match="training needs a local model"):
        load_config(TrainConfig, overrides=["model.base_url=http://127.0.0.1:1/v1"])


def cli(command: str, *paths: str):
    """Run ``rewardlab <command> <paths...>`` (paths kept whole) on a wide terminal."""
    return CliRunner().invoke(app, [*command.split(), *paths], env={"COLUMNS": "220"})


def assert_one_line_error(result, expected: str) -> None:
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and expected in lines[0], result.output
    assert "Traceback" not in result.output


def test_cli_eval_with_nothing_listening_is_one_line(tmp_path):
    result = cli(
        "eval --base-url http://127.0.0.1:1 --model x --env arithmetic -n 1 -r 1 --runs-dir", str(tmp_path)
    )
    assert_one_line_error(result, "endpoint http://127.0.0.1:1: gave up after 5 attempts: cannot connect")


def test_cli_unknown_alias_names_the_file_and_alias(stub, tmp_path):
    endpoints = write_endpoints(tmp_path, stub)
    result = cli("eval --model tunde --endpoints", endpoints, "--runs-dir", str(tmp_path))
    expected = f"{endpoints}: no endpoint 'tunde' (did you mean 'tuned'?); it has: base, tuned"
    assert_one_line_error(result, expected)


def test_cli_eval_an_alias_shows_latency_and_requests(stub, tmp_path):
    endpoints = write_endpoints(tmp_path, stub)
    result = cli(
        "eval --model tuned --env arithmetic -n 3 -r 2 --endpoints", endpoints, "--runs-dir", str(tmp_path)
    )
    assert result.exit_code == 0, result.output
    assert "latency per request mean / p50 / p95" in result.output
    requests = re.search(r"requests / retried / failed\s+│\s+(.*?)\s+│", result.output)
    assert requests and requests.group(1) == "6 / 0 (0 retries) / 0", result.output
    assert "n/a (text only)" in result.output


def test_cli_compare_two_endpoints(stub, tmp_path):
    endpoints = write_endpoints(tmp_path, stub)
    runs = str(tmp_path / "runs")
    result = cli(
        "compare base tuned --env arithmetic -n 8 -r 2 --data held-out,adversarial --label-a base "
        "--label-b tuned --endpoints",
        endpoints,
        "--runs-dir",
        runs,
    )
    assert result.exit_code == 0, result.output
    output = result.output
    assert "base and tuned are endpoints without run lineage" in output
    assert "latency ms per request (mean / p50 / p95)" in output and "requests / retried / failed" in output
    # nothing traced, so nothing claimed either way
    assert "seen in training" not in output and "training overlap" not in output
    # sloppy is wrong exactly when the result is odd: tuned wins there and ties elsewhere
    assert re.search(r"gold: (\d*[13579]) / base: \d+ / tuned: \1", output), output
    [compare_run] = RunStore(runs).list(kind="compare")
    for mode in ("held-out", "adversarial"):
        summary = compare_run.summary[mode]
        assert summary["n"] == 8 and summary["mean_diff"] > 0 and summary["ci95"][0] > 0
        assert summary["seen_in_training_a"] is None and summary["latency_p95_s_b"] > 0
    assert compare_run.config["endpoint_a"] == stub.url


def test_cli_compare_with_base_urls(stub, tmp_path):
    result = cli(
        f"compare sloppy good --base-url-a {stub.url} --base-url-b {stub.url} --env arithmetic -n 4 -r 1 "
        "--runs-dir",
        str(tmp_path),
    )
    assert result.exit_code == 0, result.output
    assert "held-out: B vs A on the same 4 records" in result.output
    endpoints = write_endpoints(tmp_path, stub)
    result = cli("compare sloppy good --env arithmetic --endpoints", endpoints, "--runs-dir", str(tmp_path))
    assert_one_line_error(result, "neither 'sloppy' nor 'good' is an endpoint alias; it has: base, tuned")
