"""Training on rollouts sampled by an inference server: `rollout_engine = "server"`, `max_off_policy_steps`.

The server is `rewardlab serve` on the tiny model, started once for the module as a process of its own on a
free port of 127.0.0.1 (one torch thread, runtime adapters allowed from a temporary --adapter-dir), as a
trainer on another machine would reach it. The trainer pushes each adapter it trains and samples from it by
token ids; these tests hold the ids and log-probs that come back to what the trainer computes itself.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import torch
from fastapi.testclient import TestClient

from conftest import user_error
from rewardlab.config import TrainConfig
from rewardlab.config.base import deep_merge
from rewardlab.config.files import validated
from rewardlab.envs import MultiTurnEnv, SingleTurnEnv
from rewardlab.errors import RewardlabError
from rewardlab.models.chat import ChatRenderer
from rewardlab.models.forward import forward_for
from rewardlab.models.loading import LoraSettings, load_model
from rewardlab.rubrics import Rubric
from rewardlab.runs import RunStore
from rewardlab.sampling.base import SamplingParams
from rewardlab.sampling.server_rollouts import RolloutServer, ServerSampler
from rewardlab.train import checkpoint as ckpt
from rewardlab.train.async_rollouts import Producer, Versions
from rewardlab.train.rollout_engine import sampling_logprobs
from rewardlab.train.trainer import build_batch, sequence_logprobs, train
from test_train import digit_fraction, easy_config

pytestmark = pytest.mark.slow  # scheduled first: see conftest.py

MESSAGES = [{"role": "user", "content": "12+7="}]


def easy_env() -> SingleTurnEnv:
    """test_train's task (the share of digits in a reply), its reward computed inline: no worker pool."""
    rows = [{"prompt": f"say something {i}", "answer": ""} for i in range(32)]
    return SingleTurnEnv(dataset=rows, rubric=Rubric([digit_fraction], isolation="inline"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServeProcess:
    """``rewardlab serve --model tiny`` in a process of its own, runtime adapters from ``adapter_dir``."""

    def __init__(self, adapter_dir: Path, log: Path):
        port = free_port()
        self.url, self.adapter_dir, self.log = f"http://127.0.0.1:{port}/v1", adapter_dir, log
        command = [sys.executable, "-m", "rewardlab.cli", "serve", "--model", "tiny", "--port", str(port),
                   "--allow-runtime-adapters", "--adapter-dir", str(adapter_dir)]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": "1", "REWARDLAB_THREADS": "1"}
        with open(log, "w") as out:
            self.process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.process.poll() is None, log.read_text()[-2000:]
            try:
                if httpx.get(self.url.removesuffix("/v1") + "/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("rewardlab serve did not start")

    def served_models(self) -> list[str]:
        return [model["id"] for model in httpx.get(f"{self.url}/models").json()["data"]]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny):  # tiny: the model is built into the cache before the server reads it
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("served")
    (folder / "adapters").mkdir()
    server = ServeProcess(folder / "adapters", folder / "serve.log")
    yield server
    server.stop()


def trained_adapter(seed: int = 1):
    """The trainer's side: the tiny model with a LoRA adapter whose B weights are visibly non-zero."""
    model, tokenizer = load_model("tiny", lora=LoraSettings(rank=4, alpha=8), trainable=True)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
    model.eval()
    return model, tokenizer


@contextmanager
def pushed(served, model, tokenizer, name: str) -> Iterator[ServerSampler]:
    """A sampler of the adapter written into the server's adapter directory and loaded under ``name``;
    unloaded and removed after."""
    ckpt.save_weights(served.adapter_dir / name, model, tokenizer)
    server = RolloutServer(served.url)
    sampler = ServerSampler(server, tokenizer)
    try:
        server.load_adapter(name, str(served.adapter_dir / name))
        sampler.begin(name, seed=0, step=1)
        yield sampler
    finally:
        server.unload_adapter(name)
        sampler.close()
        server.close()
        shutil.rmtree(served.adapter_dir / name)


def recomputed(model, scored, temperature: float):
    """The trainer's log-probs of each rollout's completion tokens, and the server's, over the loss mask."""
    batch = build_batch(scored, torch.zeros(len(scored)), 0, torch.device("cpu"))
    mine = sequence_logprobs(forward_for(model), batch, temperature, 1)
    theirs = sampling_logprobs(scored, batch.mask.shape[1], torch.device("cpu"))
    return mine, theirs, batch.mask.bool()


# -- the ids and log-probs that come back ----------------------------------------------------------------


def test_the_servers_token_ids_are_the_trainers(served):
    """The server's own rendering of a conversation is the trainer's to the token, and the ids it returns are
    the completion's: its text decoded from them, the end-of-turn token kept and given its log-prob."""
    _, tokenizer = load_model("tiny")
    renderer = ChatRenderer(tokenizer)
    # A bias towards the end-of-turn token, so that some completions end on it rather than run out of room.
    bias = {str(tokenizer.eos_token_id): 4.0}
    body = {"model": "tiny", "messages": MESSAGES, "n": 8, "max_tokens": 12, "temperature": 1.0,
            "logprobs": True, "return_token_ids": True, "seed": 5, "logit_bias": bias}  # fmt: skip
    answer = httpx.post(f"{served.url}/chat/completions", json=body, timeout=60).json()
    assert answer["prompt_token_ids"] == renderer.prompt_ids(MESSAGES)
    stop_ids = renderer.stop_token_ids
    ended = 0
    for choice in answer["choices"]:
        ids, content = choice["token_ids"], choice["message"]["content"]
        assert len(choice["logprobs"]["content"]) == len(ids)  # every generated token, the last included
        assert tokenizer.decode(ids, skip_special_tokens=True) == content
        visible = ids[:-1] if ids[-1] in stop_ids else ids
        ended += ids[-1] in stop_ids
        assert renderer.encode(content) == [t for t in visible if t not in tokenizer.all_special_ids]
    assert ended, "no completion ended on its end-of-turn token: the case this test is about went untested"


def test_sampled_log_probs_are_the_trainers_for_the_same_adapter(served):
    model, tokenizer = trained_adapter()
    env = easy_env()
    with pushed(served, model, tokenizer, "probe-single") as sampler:
        params = SamplingParams(n=4, temperature=0.9, max_new_tokens=8, logprobs=True)
        rollouts = env.rollout(sampler, env.examples("train")[:4], params)
    scored = env.rubric.score(rollouts)
    renderer = ChatRenderer(tokenizer)
    for rollout in rollouts:
        assert rollout.prompt_ids == renderer.prompt_ids(rollout.example.prompt)
        assert len(rollout.completion_logprobs) == len(rollout.completion_ids) > 0
    mine, theirs, mask = recomputed(model, scored, 0.9)
    assert mask.sum() > 20
    assert (mine - theirs)[mask].abs().max() < 1e-4
    # the adapter mattered: the base model gives these tokens other log-probs
    with model.disable_adapter():
        base, _, _ = recomputed(model, scored, 0.9)
    assert (base - theirs)[mask].abs().max() > 1e-2


class Echo(MultiTurnEnv):
    """Three model turns, the environment answering each of the first two with "again"."""

    def env_response(self, messages, state):
        state["turns"] = state.get("turns", 0) + 1
        return [{"role": "user", "content": "again"}]

    def is_completed(self, messages, state):
        return state.get("turns", 0) >= 3


def test_a_multi_turn_episode_round_trips(served):
    """Environment turns are tokenized by the trainer as the local path does and sent as ids: the server
    conditions on exactly them, so its log-probs of every model turn are the trainer's."""
    model, tokenizer = trained_adapter(seed=2)
    env = Echo(
        dataset=[{"prompt": f"go {i}", "answer": ""} for i in range(3)],
        rubric=Rubric([lambda completion: 0.0], isolation="inline"),
        max_turns=3,
    )
    # Stop strings end most turns early (a turn cut off at max_new_tokens would end its episode); they
    # change which tokens are kept, not their log-probs.
    stop = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    params = SamplingParams(n=2, temperature=1.0, max_new_tokens=8, stop=stop, logprobs=True)
    with pushed(served, model, tokenizer, "probe-multi") as sampler:
        rollouts = env.rollout(sampler, env.examples("train"), params)
    assert max(r.num_turns for r in rollouts) == 3, [r.state for r in rollouts]
    scored = env.rubric.score(rollouts)
    for rollout in rollouts:
        pairs = zip(rollout.completion_logprobs, rollout.completion_mask, strict=True)
        environment = [lp for lp, m in pairs if not m]
        assert environment and all(lp == 0.0 for lp in environment)  # env tokens: 0, not in the loss
    mine, theirs, mask = recomputed(model, scored, 1.0)
    assert (mine - theirs)[mask].abs().max() < 1e-4


# -- training through the server --------------------------------------------------------------------------


def server_config(tmp_path, served, **overrides) -> TrainConfig:
    """test_train's easy run, shorter, sampled through the served model."""
    values = {
        "max_steps": 4,
        "group_size": 4,
        "optimizer": {"learning_rate": 3e-2},
        "log_rollouts_per_step": 0,
        "rollout_engine": "server",
        "rollout_base_url": served.url,
        "rollout_adapter_dir": str(served.adapter_dir),
    }
    return easy_config(tmp_path, **deep_merge(values, overrides))


@pytest.mark.parametrize("ahead", [0, 1])
def test_training_samples_from_the_adapter_just_pushed(served, tmp_path, ahead):
    store = RunStore(tmp_path / "runs")
    result = train(server_config(tmp_path, served, max_off_policy_steps=ahead), store, env=easy_env())
    metrics = store.metrics(result.run_id)
    staleness = [value for _, value in metrics["async/staleness"]]
    deviation = [value for _, value in metrics["ratio/first_pass_max_deviation"]]
    assert store.get(result.run_id).status == "completed"
    if ahead == 0:
        # every batch sampled by the adapter of the step before, so the server's log-probs are the trainer's
        assert staleness == [0, 0, 0, 0]
        assert max(deviation) < 1e-4
    else:
        # after the first, batches are sampled while the step before trains: one update stale (a batch the
        # thread started late may be fresh), and the ratio against the server's log-probs says the policy
        # moved in between exactly when it was stale
        assert staleness[0] == 0 and set(staleness) <= {0, 1} and staleness.count(1) >= 2
        for lag, moved in zip(staleness, deviation, strict=True):
            assert moved > 1e-3 if lag else moved < 1e-4
    assert any(value > 0 for _, value in metrics["time/adapter_sync_seconds"])
    # nothing left behind: every adapter unloaded from the server and removed from the directory
    assert served.served_models() == ["tiny"]
    assert list(served.adapter_dir.iterdir()) == []


# -- what stops a run before it starts --------------------------------------------------------------------


def test_an_unreachable_server_is_one_line_and_writes_nothing(tmp_path, served):
    store = RunStore(tmp_path / "runs")
    local = server_config(tmp_path, served, rollout_engine="local", max_steps=2, checkpoint_every=1)
    interrupted = train(local, store, env=easy_env(), stop_after_step=1)
    checkpoint = ckpt.latest(interrupted.run_dir)
    nowhere = f"http://127.0.0.1:{free_port()}/v1"
    config = server_config(tmp_path, served, rollout_base_url=nowhere, resume=interrupted.run_id)
    message = user_error(train, config, store, easy_env())
    assert f"rollout server {nowhere} cannot be reached" in message
    # the run it would have resumed is as it was
    assert store.get(interrupted.run_id).status == "interrupted"
    assert ckpt.latest(interrupted.run_dir) == checkpoint and len(store.list()) == 1


def test_an_adapter_dir_the_server_cannot_read(tmp_path, served):
    config = server_config(tmp_path, served, rollout_adapter_dir=str(tmp_path / "elsewhere"))
    message = user_error(train, config, RunStore(tmp_path / "runs"), easy_env())
    assert "could not load the adapter written to" in message and "403" in message
    assert "--adapter-dir" in message
    assert RunStore(tmp_path / "runs").list() == [] and list((tmp_path / "elsewhere").iterdir()) == []


def test_a_server_that_cannot_load_adapters(tmp_path, served):
    import uvicorn

    from rewardlab.serve import build_engine, create_app

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app = create_app(build_engine("tiny"), adapter_dirs=None)  # runtime adapters off
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
        config = server_config(tmp_path, served, rollout_base_url=url)
        message = user_error(train, config, RunStore(tmp_path / "runs"), easy_env())
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert "cannot load LoRA adapters at run time (403" in message
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in message and "--allow-runtime-adapters" in message


@pytest.mark.parametrize(
    "settings, expected",
    [
        ({"max_off_policy_steps": 1}, "needs rollout_engine = 'server'"),
        ({"rollout_engine": "server"}, "needs rollout_base_url and rollout_adapter_dir"),
        (
            {
                "rollout_engine": "server",
                "rollout_base_url": "http://x/v1",
                "rollout_adapter_dir": "a",
                "lora": {"enabled": False},
            },
            "enable LoRA",
        ),
        (
            {
                "rollout_engine": "server",
                "rollout_base_url": "http://x/v1",
                "rollout_adapter_dir": "a",
                "max_off_policy_steps": 2,
                "curriculum": {"mode": "fixed"},
            },
            "a curriculum cannot be combined",
        ),
    ],
)
def test_settings_that_cannot_work_together(settings, expected):
    with pytest.raises(RewardlabError) as caught:
        validated(TrainConfig, settings)
    assert expected in str(caught.value) and len(str(caught.value).splitlines()) == 1


# -- the server's side: vLLM's return_token_ids ------------------------------------------------------------


def test_return_token_ids_on_rewardlab_serve(tiny):
    from rewardlab.serve import build_engine, create_app

    engine = build_engine("tiny", max_batch_size=8)
    renderer = ChatRenderer(engine.models.tokenizer)
    ids = renderer.prompt_ids(MESSAGES)
    with TestClient(create_app(engine)) as client:
        body = {"model": "tiny", "prompt": [ids, ids[:-1]], "n": 2, "max_tokens": 6, "logprobs": 0,
                "return_token_ids": True, "seed": 3}  # fmt: skip
        answer = client.post("/v1/completions", json=body).json()
        assert [c["prompt_token_ids"] for c in answer["choices"]] == [ids, ids, ids[:-1], ids[:-1]]
        for choice in answer["choices"]:
            assert len(choice["logprobs"]["token_logprobs"]) == len(choice["token_ids"]) > 0
        plain = client.post("/v1/completions", json={**body, "return_token_ids": False}).json()
        assert "token_ids" not in plain["choices"][0]  # only when asked, as vLLM
        stream = {"model": "tiny", "messages": MESSAGES, "stream": True, "return_token_ids": True}
        streamed = client.post("/v1/chat/completions", json=stream)
        assert streamed.status_code == 400 and "return_token_ids" in streamed.json()["error"]["message"]


# -- the producer thread ------------------------------------------------------------------------------------


def test_the_producer_never_samples_more_than_k_updates_ahead():
    versions, log = Versions(), []
    versions.publish(0)

    def sample(step, version):
        log.append((step, version, versions.latest))
        return f"batch {step}"

    producer = Producer(sample, versions, 1, 6, ahead=2).start()
    try:
        for step in range(1, 7):
            item = producer.next(step)
            assert item.batch == f"batch {step}" and step - 1 - item.version <= 2
            time.sleep(0.05)  # "training": the producer runs ahead meanwhile, as far as it may
            versions.publish(step)
    finally:
        producer.close()
    assert [step for step, _, _ in log] == [1, 2, 3, 4, 5, 6]
    assert max(step - 1 - version for step, version, _ in log) == 2  # it did run ahead, k and no more


def test_an_error_while_sampling_ahead_reaches_the_trainer():
    versions = Versions()
    versions.publish(0)

    def sample(step, version):
        if step == 2:
            raise RewardlabError("every reward errored")
        return step

    producer = Producer(sample, versions, 1, 4, ahead=1).start()
    try:
        assert producer.next(1).batch == 1
        with pytest.raises(RewardlabError, match="every reward errored"):
            producer.next(2)
    finally:
        producer.close()
