"""The LLM judge against a scripted OpenAI-compatible server on 127.0.0.1: scores, retries, bounded
concurrency, and failures that error the component instead of scoring it 0."""

import asyncio
import socket
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from rewardlab.errors import RewardlabError
from rewardlab.rubrics import Rubric, llm_judge, parse_score
from rewardlab.rubrics.judge import JudgeError
from rewardlab.types import Example, Rollout


class ScriptedChat:
    """Replies from a script, one step per request: a string is a reply, an int an HTTP error status.
    The last step repeats. Counts requests and the most that were in flight at once."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset([])

    def reset(self, steps, delay: float = 0.0):
        with self.lock:
            self.steps, self.delay = list(steps), delay
            self.requests, self.in_flight, self.max_in_flight = 0, 0, 0
            self.prompts: list[str] = []

    def next_step(self, prompt: str):
        with self.lock:
            self.requests += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.prompts.append(prompt)
            return self.steps.pop(0) if len(self.steps) > 1 else self.steps[0]

    def done(self):
        with self.lock:
            self.in_flight -= 1


def chat_app(script: ScriptedChat) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def completions(request: Request):
        body = await request.json()
        step = script.next_step(body["messages"][-1]["content"])
        try:
            await asyncio.sleep(script.delay)
            if isinstance(step, int):
                return JSONResponse({"error": {"message": f"scripted {step}"}}, status_code=step)
            return {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": 0,
                "model": body["model"],
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": step}, "finish_reason": "stop"}
                ],
            }
        finally:
            script.done()

    return app


@pytest.fixture(scope="module")
def server():
    script = ScriptedChat()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(chat_app(script), log_level="error", lifespan="off")
    uvicorn_server = uvicorn.Server(config)
    thread = threading.Thread(target=uvicorn_server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uvicorn_server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert uvicorn_server.started
    yield script, f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    uvicorn_server.should_exit = True
    thread.join(timeout=5)
    sock.close()


def rollouts(n: int = 1, text: str = "It is 4.") -> list[Rollout]:
    example = Example("e1", [{"role": "user", "content": "What is 2+2?"}], "4")
    return [Rollout(example, i, [{"role": "assistant", "content": text}]) for i in range(n)]


def judge_rubric(base_url: str, **options) -> Rubric:
    options = {"backoff": 0.01, **options}
    return Rubric([llm_judge("judge-model", base_url=base_url, **options)])


def test_the_score_comes_from_the_reply_and_the_prompt_is_filled(server):
    script, url = server
    script.reset(["The answer matches the reference.\nSCORE: 0.8"])
    [scored] = judge_rubric(url).score(rollouts())
    assert scored.errors == {} and scored.components == {"judge": 0.8}
    assert script.requests == 1
    assert "What is 2+2?" in script.prompts[0] and "It is 4." in script.prompts[0]


@pytest.mark.parametrize("failures", [[500], [429, 429], [503, 429, 502]])
def test_server_errors_and_rate_limits_are_retried(server, failures):
    script, url = server
    script.reset([*failures, "SCORE: 1"])
    [scored] = judge_rubric(url, retries=3).score(rollouts())
    assert scored.components == {"judge": 1.0}
    assert script.requests == len(failures) + 1


def test_an_endpoint_that_keeps_failing_errors_the_component(server):
    script, url = server
    script.reset([500])
    [scored] = judge_rubric(url, retries=2).score(rollouts())
    assert scored.components == {"judge": None} and scored.errored
    assert scored.errors["judge"].startswith("JudgeError: judge endpoint failed 3 times")
    assert script.requests == 3


def test_a_client_error_is_not_retried(server):
    script, url = server
    script.reset([400])
    [scored] = judge_rubric(url, retries=3).score(rollouts())
    assert "judge request failed" in scored.errors["judge"] and script.requests == 1


def test_a_reply_without_a_score_errors_the_component(server):
    script, url = server
    script.reset(["I think it is probably fine."])
    [scored] = judge_rubric(url).score(rollouts())
    assert scored.components == {"judge": None}
    assert "no 'SCORE: <0..1>' line" in scored.errors["judge"]
    assert script.requests == 1  # a reply is not retried: the same prompt would get the same answer


def test_a_slow_endpoint_times_out_and_is_retried(server):
    script, url = server
    script.reset(["SCORE: 1"], delay=1.0)
    started = time.perf_counter()
    [scored] = judge_rubric(url, timeout=0.2, retries=1).score(rollouts())
    assert "failed 2 times" in scored.errors["judge"] and "Timeout" in scored.errors["judge"]
    assert script.requests == 2 and time.perf_counter() - started < 1.0


def test_concurrency_is_bounded(server):
    script, url = server
    script.reset(["SCORE: 0.5"], delay=0.2)
    scored = judge_rubric(url, max_concurrency=2).score(rollouts(6))
    assert [s.reward for s in scored] == [0.5] * 6
    assert script.max_in_flight == 2  # never more than two, and the two did overlap


def test_the_rubric_timeout_does_not_cut_the_judge_short(server):
    """Waiting for a free slot is not the judge's own time: six 0.2 s requests, two at a time, take 0.6 s
    and the rubric's 0.5 s timeout does not apply to the judge."""
    script, url = server
    script.reset(["SCORE: 1"], delay=0.2)
    rubric = Rubric([llm_judge("m", base_url=url, max_concurrency=2)], timeout=0.5)
    assert [s.reward for s in rubric.score(rollouts(6))] == [1.0] * 6


def test_a_missing_api_key_is_one_line_naming_the_variable(monkeypatch):
    monkeypatch.delenv("JUDGE_KEY_FOR_TEST", raising=False)
    with pytest.raises(RewardlabError) as error:
        llm_judge("gpt-x", api_key_env="JUDGE_KEY_FOR_TEST")
    assert "JUDGE_KEY_FOR_TEST" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(RewardlabError):
        llm_judge("gpt-x", base_url="https://api.example.com/v1", api_key_env="JUDGE_KEY_FOR_TEST")
    llm_judge("local", base_url="http://localhost:8000/v1", api_key_env="JUDGE_KEY_FOR_TEST")  # no key needed
    monkeypatch.setenv("JUDGE_KEY_FOR_TEST", "sk-test")
    llm_judge("gpt-x", api_key_env="JUDGE_KEY_FOR_TEST")


def test_a_template_with_an_unknown_field_is_refused():
    with pytest.raises(RewardlabError, match="unknown or malformed field"):
        llm_judge("m", base_url="http://127.0.0.1:1/v1", prompt_template="Grade {reply}")


@pytest.mark.parametrize(
    "reply, score",
    [
        ("reasoning...\nSCORE: 0.8", 0.8),
        ("Score = 1", 1.0),
        ("**Score:** .25", 0.25),
        ("SCORE: 0.1 at first, but on reflection\nSCORE: 0.9", 0.9),
        ("Is it right?\nYes.", 1.0),
        ("no", 0.0),
    ],
)
def test_parse_score_reads_the_documented_formats(reply, score):
    assert parse_score(reply) == score


@pytest.mark.parametrize("reply", ["SCORE: 7", "SCORE: -0.5", "maybe", ""])
def test_parse_score_refuses_anything_else(reply):
    with pytest.raises(JudgeError):
        parse_score(reply)
