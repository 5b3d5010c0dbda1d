"""Data-parallel training: two processes train what one process trains on the same batch, a run resumes
exactly under two processes, and what cannot work is refused in a line.

The two-process runs are started once, by torchrun (gloo on 127.0.0.1, one thread per process), with this
file as their script (``worker``, at the bottom): a start costs about 30 s on two cores, most of it each
process importing torch and transformers, so one start runs all three trainings.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from conftest import user_error
from rewardlab.config import TrainConfig, load_config
from rewardlab.runs import RunStore
from rewardlab.train.checkpoint import latest
from rewardlab.train.distributed import World
from rewardlab.train.trainer import train

pytestmark = pytest.mark.slow  # scheduled first: see conftest.py

ENV_SOURCE = """
from rewardlab.envs import SingleTurnEnv
from rewardlab.rubrics import Rubric


def digit_fraction(completion: str) -> float:
    return sum(c.isdigit() for c in completion) / max(len(completion), 1)


def load_environment(**kwargs):
    rows = [{"prompt": f"say something {i}", "answer": ""} for i in range(32)]
    return SingleTurnEnv(dataset=rows, eval_dataset=rows[:8], rubric=Rubric([digit_fraction]))
"""

SETTINGS = [
    "max_steps=3",
    "prompts_per_step=4",
    "group_size=4",
    "sampling.max_new_tokens=6",
    "optimizer.learning_rate=1e-2",
    "log_rollouts_per_step=2",
    "checkpoint_every=2",
]


def config_for(runs_dir, env_file, *settings: str) -> TrainConfig:
    """The config the command line builds from ``--model tiny --env FILE --set ...``."""
    values = {"model.name_or_path": "tiny", "env.name": str(env_file), "runs_dir": str(runs_dir)}
    return load_config(TrainConfig, None, [*SETTINGS, *settings], values)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny):  # tiny: the model is built before two processes look for it
    root = tmp_path_factory.mktemp("distributed")
    env_file = root / "digits_env.py"
    env_file.write_text(ENV_SOURCE)
    runs_dir = root / "runs"
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"),
        *("--master-addr", "127.0.0.1", "--master-port", str(free_port())),
        *(__file__, str(runs_dir), str(env_file)),
    ]
    done = subprocess.run(
        command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    store = RunStore(runs_dir)
    return SimpleNamespace(
        env_file=env_file,
        runs_dir=runs_dir,
        store=store,
        whole=store.get("whole"),
        resumed=store.get("resumed"),
    )


def adapter_difference(a, b) -> float:
    """The largest difference between two adapter directories' tensors."""
    first, second = load_file(a / "adapter_model.safetensors"), load_file(b / "adapter_model.safetensors")
    assert first.keys() == second.keys()
    return max(float((first[name] - second[name]).abs().max()) for name in first)


def comparable(table):
    """Every metric but wall-clock ones, which differ between any two runs."""
    clock = ("time/", "throughput/", "cost/wall_seconds", "cost/usd")
    return [{k: v for k, v in row.items() if not k.startswith(clock)} for row in table]


def test_two_processes_train_what_one_process_trains(runs, tmp_path):
    # One process on the same global batch, from the same seed, sampling each group from its own stream as
    # the two processes do. micro_batches = 2 splits its batch where the processes split theirs, so both add
    # the same two half-batch gradients: the adapters agree to the last bit. (With micro_batches = 1 they
    # differ by about 1e-4, as micro_batches 1 and 2 do in one process: summing in another order moves
    # gradients near zero by a rounding error, and AdamW's first steps divide each by its own size.)
    one = train(config_for(tmp_path / "runs", runs.env_file, "seed_per_group=true", "micro_batches=2"))
    store = RunStore(tmp_path / "runs")
    assert adapter_difference(one.adapter_dir, runs.whole.dir / "final") <= 1e-5
    expected = comparable(store.metric_table(one.run_id))
    got = comparable(runs.store.metric_table(runs.whole.id))
    assert [row["step"] for row in got] == [1, 2, 3]
    for want, have in zip(expected, got, strict=True):  # the logged numbers are the whole batch's
        assert have == pytest.approx(want, rel=1e-5, abs=1e-7), have["step"]
    # Rank 0 wrote the run once; the other process wrote nothing.
    assert runs.whole.status == "completed" and runs.whole.manifest["processes"] == 2
    assert runs.whole.config["seed_per_group"] is True
    assert len(runs.store.rollouts(runs.whole.id, phase="train")) == 3 * 2
    assert sorted(run.name for run in runs.store.list()) == ["resumed", "whole"]


def test_a_run_resumed_under_two_processes_is_the_uninterrupted_run(runs):
    resumed = runs.store.get(runs.resumed.id)
    assert resumed.status == "completed"
    got = comparable(runs.store.metric_table(resumed.id))
    assert [row["step"] for row in got] == [1, 2, 3]
    for want, have in zip(comparable(runs.store.metric_table(runs.whole.id)), got, strict=True):
        assert have == pytest.approx(want, rel=1e-6, abs=1e-8), have["step"]
    assert adapter_difference(resumed.dir / "final", runs.whole.dir / "final") <= 1e-5
    state = torch.load(latest(resumed.dir) / "trainer_state.pt", weights_only=False)
    assert state["totals"]["world_size"] == 2


def test_resuming_on_another_number_of_processes_is_refused(runs):
    before = (runs.store.metric_table(runs.resumed.id), runs.store.get(runs.resumed.id).status)
    config = config_for(runs.runs_dir, runs.env_file, f"resume={runs.resumed.id}")
    message = user_error(train, config)
    assert "trained by 2 processes" in message and "resumed by 1 process" in message, message
    # Nothing already written is lost: the metrics, the status and the checkpoints are as they were.
    assert (runs.store.metric_table(runs.resumed.id), runs.store.get(runs.resumed.id).status) == before
    assert latest(runs.resumed.dir).name == "step-000003"


def test_what_cannot_be_split_is_refused_before_anything_loads(tmp_path):
    config = config_for(tmp_path, "arithmetic")
    assert World().configured(config) is config  # one process: exactly the config given
    assert World(1, 2, 1).configured(config).seed_per_group is True
    message = user_error(World(0, 3).configured, config)
    assert "prompts_per_step = 4 does not split over 3 processes" in message
    dynamic = config_for(tmp_path, "arithmetic", "dynamic_sampling.enabled=true")
    assert "dynamic_sampling" in user_error(World(0, 2).configured, dynamic)
    assert World(1, 2).shard(list("abcd")) == ["c", "d"] and World(1, 2).first(4) == 2


def test_a_seeded_prompt_samples_the_same_whatever_is_beside_it(tiny):
    from rewardlab.sampling.base import Prompt, SamplingParams
    from rewardlab.sampling.local import LocalSampler

    model, tokenizer = tiny
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=8)

    def prompt(text: str, seed: int | None) -> Prompt:
        return Prompt([{"role": "user", "content": text}], seed=seed)

    alone = LocalSampler(model, tokenizer).generate([prompt("seven", 7)], params)[0]
    crowded = LocalSampler(model, tokenizer, max_batch_size=2).generate(
        [prompt("a longer prompt first", 1), prompt("seven", 7), prompt("x", 2)], params
    )[1]
    assert [g.token_ids for g in crowded] == [g.token_ids for g in alone]
    assert len({tuple(g.token_ids) for g in alone}) > 1  # the samples of one prompt differ from each other
    with pytest.raises(ValueError, match="every prompt"):
        LocalSampler(model, tokenizer).generate([prompt("a", 1), prompt("b", None)], params)


def test_a_row_given_its_uniform_number_takes_the_token_whose_share_holds_it():
    from rewardlab.sampling.local import sample_by_uniforms

    logits = torch.tensor([0.25, 0.5, 0.25]).log().expand(4, 3)
    uniforms = torch.tensor([0.1, 0.3, 0.74, 0.9])
    assert sample_by_uniforms(logits, 1.0, 1.0, uniforms).tolist() == [0, 1, 1, 2]
    assert sample_by_uniforms(logits, 1.0, 0.4, uniforms).tolist() == [1, 1, 1, 1]  # the nucleus: token 1


def test_python_dash_m_rewardlab_runs_the_command_line():
    done = subprocess.run(
        [sys.executable, "-m", "rewardlab", "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and done.stdout.startswith("rewardlab "), done.stderr


def worker(runs_dir: str, env_file: str) -> None:
    """One process of the torchrun start: the uninterrupted run through the command line, a run stopped
    after step 2 (its last checkpoint) and its resume through the command line."""
    from rewardlab.cli import app

    command = ["train", "--model", "tiny", "--env", env_file, "--runs-dir", runs_dir]
    settings = [word for setting in [*SETTINGS, "run_name=whole"] for word in ("--set", setting)]
    code = app([*command, *settings], standalone_mode=False)
    if code:
        raise SystemExit(code)
    stopped = train(config_for(runs_dir, env_file, "run_name=resumed"), stop_after_step=2)
    code = app(["train", "--resume", stopped.run_id, "--runs-dir", runs_dir], standalone_mode=False)
    if code:
        raise SystemExit(code)


if __name__ == "__main__":
    worker(*sys.argv[1:])
