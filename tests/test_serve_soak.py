"""`rewardlab serve` under clients that leave, and a few seconds of the soak (``benchmarks/soak_server.py``).

One real uvicorn server on 127.0.0.1 (the tiny model, in a background thread), as in ``test_serve.py``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch
import uvicorn

from rewardlab.serve import build_engine, create_app

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import soak_server  # noqa: E402

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "12+7="}], "max_tokens": 4}


@pytest.fixture(scope="module")
def server():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    engine = build_engine("tiny", max_batch_size=8, batch_wait_ms=0)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    running = uvicorn.Server(uvicorn.Config(create_app(engine), log_level="warning"))
    thread = threading.Thread(target=running.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    running.engine, running.url = engine, f"http://127.0.0.1:{sock.getsockname()[1]}"
    yield running
    running.should_exit = True
    thread.join(timeout=10)
    torch.set_num_threads(threads)


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


@pytest.mark.parametrize("stream", [False, True])
def test_a_request_whose_client_leaves_while_it_waits_is_never_generated(server, stream):
    """The model is busy; two requests wait, and the second one's client leaves. It is not generated
    (before, every request was, its answer written to nobody) and no longer counts as queued."""
    engine, metrics = server.engine, server.engine.metrics
    before = metrics.as_dict()
    engine._lock.acquire()  # the model is busy between two steps: requests queue
    try:
        first: list = []
        busy = threading.Thread(target=lambda: first.append(httpx.post(f"{server.url}/v1/chat/completions",
                                                                      json=CHAT, timeout=60)))  # fmt: skip
        busy.start()
        wait_for(lambda: engine.queued_completions == 1, "the first request to queue")
        if stream:
            with httpx.Client(timeout=60) as client:  # leaving the block closes the connection
                url = f"{server.url}/v1/chat/completions"
                with client.stream("POST", url, json={**CHAT, "stream": True}) as reply:
                    assert reply.status_code == 200
                    next(reply.iter_lines())  # the assistant's role chunk comes at once; then it leaves
        else:
            with socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1]))) as connection:
                body = json.dumps(CHAT).encode()
                head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                connection.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
                wait_for(lambda: engine.queued_completions == 2, "the second request to queue")
        wait_for(lambda: engine.queued_completions == 1, "the queue to let go of the request that left")
    finally:
        engine._lock.release()
    busy.join(timeout=60)
    assert first[0].status_code == 200
    wait_for(lambda: metrics.abandoned == before["abandoned"] + 1, "the engine to skip it")
    assert metrics.requests == before["requests"] + 2
    assert metrics.completions == before["completions"] + 1  # the first request's alone
    assert httpx.post(f"{server.url}/v1/chat/completions", json=CHAT, timeout=60).status_code == 200


def test_a_few_seconds_of_soak_lose_nothing_and_answer_as_expected(server):
    outcomes = asyncio.run(soak_server.drive(server.url, clients=4, seconds=3, seed=1))
    report = soak_server.summary(outcomes)
    assert report["server_errors"] == 0 and report["lost"] == 0, report["lost_examples"]
    assert report["unexpected"] == 0, report["unexpected_examples"]
    assert report["valid_answered"] > 0 and report["requests"] > report["valid_answered"]


def test_a_client_that_leaves_mid_stream_stops_its_rows_generating(server):
    """A stream whose client leaves part-way: its rows end at the next step instead of running on to
    max_tokens with nobody reading (EOS is biased away, so only the cancellation can end them early)."""
    engine, metrics = server.engine, server.engine.metrics
    eos = engine.models.tokenizer.eos_token_id
    request = {**CHAT, "stream": True, "max_tokens": 400, "logit_bias": {str(eos): -100}}
    before = metrics.as_dict()
    url = f"{server.url}/v1/chat/completions"
    with httpx.Client(timeout=60) as client, client.stream("POST", url, json=request) as reply:
        assert reply.status_code == 200
        lines = reply.iter_lines()
        for _ in range(4):  # the role chunk and a few tokens, then the client leaves
            next(lines)
    counted = [-1]

    def settled() -> bool:  # no token generated for a while: the rows have ended
        now = metrics.completion_tokens
        if now == counted[0]:
            return True
        counted[0] = now
        time.sleep(0.3)
        return False

    wait_for(settled, "the rows to end")
    generated = metrics.completion_tokens - before["completion_tokens"]
    assert 0 < generated < 400, generated
