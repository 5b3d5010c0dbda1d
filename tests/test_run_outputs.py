"""What a run leaves behind and reports: a report.md with curves in every sft, train and eval run, the
training-prompt hashes in a file that says what it is, latency measured per batch, and the thread count
chosen from the free cores."""

import re
import time

import pytest

from rewardlab.config import EvalConfig, SFTConfig, TrainConfig
from rewardlab.envs import SingleTurnEnv
from rewardlab.errors import RewardlabError
from rewardlab.eval.evaluate import evaluate
from rewardlab.rubrics import Rubric
from rewardlab.runs import RunStore
from rewardlab.runs.lineage import training_data_of
from rewardlab.runs.overlap import HASHES_FILE
from rewardlab.sampling.base import Generation
from rewardlab.threads import choose_threads, configure_threads, free_cores
from rewardlab.train.sft import run_sft
from rewardlab.train.trainer import train


def images_exist(report, run_dir):
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert images
    for image in images:
        assert (run_dir / image).stat().st_size > 1000


def test_sft_train_and_eval_runs_each_write_a_report(tmp_path):
    store = RunStore(tmp_path)
    env = {"name": "arithmetic", "args": {"level": 1, "num_train": 20, "num_eval": 4}}
    sft = run_sft(
        SFTConfig.model_validate(
            {"env": env, "max_steps": 4, "batch_size": 4, "log_every": 1, "runs_dir": str(tmp_path)}
        ),
        store,
    )
    trained = train(
        TrainConfig.model_validate(
            {
                "model": {"name_or_path": str(sft.model_dir)},
                "env": env,
                "max_steps": 2,
                "prompts_per_step": 2,
                "group_size": 2,
                "sampling": {"max_new_tokens": 4},
                "runs_dir": str(tmp_path),
            }
        ),
        store,
    )
    evaluated = evaluate(
        EvalConfig.model_validate(
            {
                "model": {"name_or_path": str(trained.run_dir)},
                "env": env,
                "rollouts_per_example": 2,
                "sampling": {"max_new_tokens": 4},
                "runs_dir": str(tmp_path),
            }
        ),
        store,
    )
    sft_report = (store.get(sft.run_id).dir / "report.md").read_text()
    assert f"# SFT run `{sft.run_id}`" in sft_report and "demonstration()" in sft_report
    images_exist(sft_report, store.get(sft.run_id).dir)

    train_report = (trained.run_dir / "report.md").read_text()
    assert f"# Training run `{trained.run_id}`" in train_report
    assert "0 of 8" in train_report and "## Rollouts of the last step (4 of those stored)" in train_report
    assert "No health alert fired." in train_report and "Cost: unpriced;" in train_report
    images_exist(train_report, trained.run_dir)

    eval_report = (evaluated.run_dir / "report.md").read_text()
    assert "4 examples × 2 rollouts" in eval_report and "| pass@2 |" in eval_report
    assert "latency per batch" in eval_report
    images_exist(eval_report, evaluated.run_dir)

    # The prompt hashes say what they are, and are still read as hashes.
    hashes = (trained.run_dir / HASHES_FILE).read_text().splitlines()
    assert hashes[0].startswith("# content v2") and "compare" in hashes[1]
    assert len(training_data_of(str(trained.run_dir), store).hashes) == 20


class PacedSampler:
    """Replies "ok" and takes longer on each call: batch latencies that differ, and are known."""

    def __init__(self):
        self.calls = 0

    def generate(self, prompts, params):
        self.calls += 1
        time.sleep(0.02 * self.calls)
        return [[Generation("ok")] * params.n for _ in prompts]


def test_latency_is_reported_per_batch(tmp_path):
    rows = [{"prompt": f"q{i}", "answer": "ok"} for i in range(10)]
    env = SingleTurnEnv(dataset=rows, eval_dataset=rows, rubric=Rubric([lambda completion: 1.0]))
    config = EvalConfig.model_validate(
        {"runs_dir": str(tmp_path), "rollouts_per_example": 2, "max_batch_size": 4}
    )
    summary = evaluate(config, env=env, sampler=PacedSampler()).summary
    assert summary["latency_per"] == "batch"
    assert summary["batches"] == 5 and summary["rollouts_per_batch"] == 4  # 2 examples x 2 rollouts a batch
    # 0.02 s to 0.10 s: a mean, median and tail that differ, unlike one batch time copied to every rollout.
    assert 0.055 < summary["latency_mean_s"] < 0.09
    assert summary["latency_p50_s"] < summary["latency_p95_s"]
    assert summary["rollouts_per_second"] == pytest.approx(20 / (5 * summary["latency_mean_s"]))


def test_threads_default_to_the_free_cores():
    assert free_cores(2, 1.37) == 1 and free_cores(2, 0.3) == 2 and free_cores(8, 2.6) == 5
    assert free_cores(2, 7.0) == 1 and free_cores(4, -1) == 4
    assert choose_threads({"OMP_NUM_THREADS": "3"}) == (None, "OMP_NUM_THREADS")
    assert choose_threads({"OMP_NUM_THREADS": "3", "REWARDLAB_THREADS": "2"}) == (2, "REWARDLAB_THREADS")
    threads, why = choose_threads({})
    assert threads >= 1 and "cores, load" in why
    with pytest.raises(RewardlabError, match="REWARDLAB_THREADS must be a whole number"):
        choose_threads({"REWARDLAB_THREADS": "many"})


def test_the_command_line_sets_the_thread_count(monkeypatch):
    import torch

    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("REWARDLAB_THREADS", "1")
    try:
        assert configure_threads() == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
