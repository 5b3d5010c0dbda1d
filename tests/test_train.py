"""Training on the tiny model: rewards go up, runs resume exactly, SFT primes, eval and compare record."""

import json

import pytest

from rewardlab.config import EvalConfig, SFTConfig, TrainConfig, deep_merge, validated
from rewardlab.envs import SingleTurnEnv
from rewardlab.eval.compare import compare_runs
from rewardlab.eval.evaluate import evaluate
from rewardlab.rubrics import Rubric
from rewardlab.runs import RunStore
from rewardlab.train.sft import run_sft
from rewardlab.train.trainer import examples_for_step, train


def digit_fraction(completion: str) -> float:
    """Deliberately easy: the share of characters that are digits (about 9% for the untrained model)."""
    return sum(c.isdigit() for c in completion) / max(len(completion), 1)


def easy_env() -> SingleTurnEnv:
    rows = [{"prompt": f"say something {i}", "answer": ""} for i in range(32)]
    return SingleTurnEnv(dataset=rows, eval_dataset=rows[:8], rubric=Rubric([digit_fraction]))


def easy_config(tmp_path, **overrides) -> TrainConfig:
    values = {
        "runs_dir": str(tmp_path / "runs"),
        "max_steps": 12,
        "prompts_per_step": 4,
        "group_size": 8,
        "optimizer": {"learning_rate": 1e-2},
        "sampling": {"max_new_tokens": 6},
        "log_rollouts_per_step": 2,
        "lora": {"rank": 8, "alpha": 16},
        "seed": 0,
    }
    return validated(TrainConfig, deep_merge(values, overrides))


def test_easy_reward_goes_up(tmp_path):
    store = RunStore(tmp_path / "runs")
    config = easy_config(tmp_path, lora={"enabled": False}, optimizer={"learning_rate": 3e-3})
    result = train(config, store, env=easy_env())
    rewards = [value for _, value in store.metrics(result.run_id)["reward/mean"]]
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert last > first + 0.25, rewards
    run = store.get(result.run_id)
    assert run.status == "completed" and (result.adapter_dir / "model.safetensors").exists()
    metrics = store.metrics(result.run_id)
    for name in (
        "entropy",
        "clip/low_fraction",
        "clip/high_fraction",
        "grad_norm",
        "reward/std",
        "groups/zero_std_fraction",
        "reward/digit_fraction",
        "completion/mean_length",
        "completion/max_length",
        "completion/truncated_fraction",
        "throughput/tokens_per_second",
        "time/step_seconds",
        "errors/rollouts",
        "learning_rate",
    ):
        assert len(metrics[name]) == 12, name
    assert len(store.rollouts(result.run_id, phase="train")) == 12 * 2


def test_lora_trains_the_adapter_and_leaves_the_base_alone(tmp_path):
    import torch

    from rewardlab.models import load_model

    store = RunStore(tmp_path / "runs")
    result = train(easy_config(tmp_path, max_steps=3), store, env=easy_env())
    assert (result.adapter_dir / "adapter_config.json").exists()
    tuned, _ = load_model(str(result.run_dir))  # a run directory resolves to its final adapter
    base, _ = load_model("tiny")
    base_weights = dict(base.named_parameters())
    lora_b = [p for n, p in tuned.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # B starts at zero; training moved it
    for name, parameter in tuned.named_parameters():
        if "lora_" not in name:
            plain = name.replace("base_model.model.", "").replace(".base_layer", "")
            assert torch.equal(parameter, base_weights[plain]), name
    with tuned.disable_adapter():  # the reference policy is the base, with no second copy
        ids = torch.tensor([[5, 6, 7]])
        assert torch.allclose(tuned(ids).logits, base(ids).logits)


def test_kl_to_the_base_is_logged_and_starts_at_zero(tmp_path):
    store = RunStore(tmp_path / "runs")
    config = easy_config(tmp_path, max_steps=4, beta=0.1, optimizer={"learning_rate": 3e-2})
    result = train(config, store, env=easy_env())
    kl = [value for _, value in store.metrics(result.run_id)["kl"]]
    assert len(kl) == 4 and all(value >= 0 for value in kl)
    assert kl[0] == pytest.approx(0.0, abs=1e-6)  # LoRA B starts at zero: policy == reference
    assert kl[-1] > 1e-6  # and training moves the policy away from it


def test_kl_without_lora_is_refused(tmp_path):
    from rewardlab.errors import RewardlabError

    with pytest.raises(RewardlabError, match="beta > 0 needs a reference model"):
        train(
            easy_config(tmp_path, beta=0.1, lora={"enabled": False}),
            RunStore(tmp_path / "runs"),
            env=easy_env(),
        )


def test_micro_batches_change_memory_not_the_result(tmp_path):
    store = RunStore(tmp_path / "runs")
    whole = train(easy_config(tmp_path, max_steps=3), store, env=easy_env())
    split = train(easy_config(tmp_path, max_steps=3, micro_batches=4), store, env=easy_env())
    for name in ("reward/mean", "loss", "grad_norm", "entropy"):
        a = [v for _, v in store.metrics(whole.run_id)[name]]
        b = [v for _, v in store.metrics(split.run_id)[name]]
        assert b == pytest.approx(a, rel=1e-4, abs=1e-6), name


def comparable(table):
    """Every metric but wall-clock ones, which differ between any two runs."""
    clock = ("time/", "throughput/", "cost/wall_seconds")
    return [{k: v for k, v in row.items() if not k.startswith(clock)} for row in table]


@pytest.mark.parametrize("loss_type, iterations", [("dapo", 1), ("grpo", 2)])
def test_resume_reproduces_the_uninterrupted_run(tmp_path, loss_type, iterations):
    store = RunStore(tmp_path / "runs")
    common = {
        "max_steps": 6,
        "checkpoint_every": 2,
        "loss_type": loss_type,
        "num_iterations": iterations,
        "optimizer": {"lr_scheduler": "cosine", "warmup_steps": 2},
    }
    whole = train(easy_config(tmp_path, **common), store, env=easy_env())
    interrupted = train(easy_config(tmp_path, **common), store, env=easy_env(), stop_after_step=3)
    assert store.get(interrupted.run_id).status == "interrupted"
    resumed = train(easy_config(tmp_path, **common, resume=interrupted.run_id), store, env=easy_env())
    assert resumed.run_id == interrupted.run_id  # same run, continued from its step-2 checkpoint
    expected = comparable(store.metric_table(whole.run_id))
    got = comparable(store.metric_table(resumed.run_id))
    assert [row["step"] for row in got] == [1, 2, 3, 4, 5, 6]
    for want, have in zip(expected, got, strict=True):
        assert have == pytest.approx(want, rel=1e-5, abs=1e-7), have["step"]


def test_resume_without_checkpoint_is_a_user_error(tmp_path):
    from rewardlab.errors import RewardlabError

    store = RunStore(tmp_path / "runs")
    run = store.create_run("train", {})
    with pytest.raises(RewardlabError, match="has no checkpoint to resume from"):
        train(easy_config(tmp_path, resume=run.id), store, env=easy_env())


def test_reward_errors_are_counted_not_scored_zero(tmp_path):
    def flaky(completion: str) -> float:
        if len(completion) % 2:
            raise ValueError("odd length")
        return 1.0

    env = SingleTurnEnv(dataset=[{"prompt": f"p{i}"} for i in range(8)], rubric=Rubric([flaky]))
    store = RunStore(tmp_path / "runs")
    result = train(easy_config(tmp_path, max_steps=2), store, env=env)
    errors = [v for _, v in store.metrics(result.run_id)["errors/rollouts"]]
    assert sum(errors) > 0
    assert store.get(result.run_id).summary["reward_errors"] == sum(errors)
    rows = store.rollouts(result.run_id, phase="train")
    errored = [r for r in rows if r["errors"]]
    assert errored and all(r["components"]["flaky"] is None for r in errored)
    # The reward mean is over rollouts that scored: 1.0, never dragged down by fake zeros.
    assert all(v == 1.0 for _, v in store.metrics(result.run_id)["reward/mean"])


def test_example_order_is_a_function_of_step_and_seed():
    pool = easy_env().train_examples
    first = [examples_for_step(pool, step, 5, seed=1) for step in range(1, 8)]
    again = [examples_for_step(pool, step, 5, seed=1) for step in range(1, 8)]
    assert first == again
    seen = [e.id for batch in first for e in batch]
    assert len(set(seen[:32])) == 32  # an epoch visits every example once


def test_sft_primes_then_eval_and_compare_record_everything(tmp_path):
    store = RunStore(tmp_path / "runs")
    env_config = {"name": "arithmetic", "args": {"level": 1, "num_train": 60, "num_eval": 6}}
    sft = run_sft(
        SFTConfig.model_validate(
            {
                "env": env_config,
                "max_steps": 60,
                "batch_size": 16,
                "optimizer": {"learning_rate": 3e-3, "warmup_steps": 5},
                "log_every": 10,
                "runs_dir": str(tmp_path / "runs"),
            }
        ),
        store,
    )
    losses = [v for _, v in store.metrics(sft.run_id)["loss"]]
    assert losses[-1] < losses[0] * 0.5, losses

    def eval_of(model):
        return evaluate(
            EvalConfig.model_validate(
                {
                    "model": {"name_or_path": model},
                    "env": env_config,
                    "rollouts_per_example": 4,
                    "sampling": {"max_new_tokens": 8},
                    "runs_dir": str(tmp_path / "runs"),
                }
            ),
            store,
        )

    base, primed = eval_of("tiny"), eval_of(str(sft.run_id and tmp_path / "runs" / sft.run_id))
    for result in (base, primed):
        summary = result.summary
        assert summary["num_examples"] == 6 and summary["num_rollouts"] == 24
        assert {"pass@1", "pass@2", "pass@4", "components", "errors", "latency_p95_s"} <= set(summary)
        assert summary["pass@1"] <= summary["pass@2"] <= summary["pass@4"]
        lines = (result.run_dir / "results.jsonl").read_text().splitlines()
        assert len(lines) == 24 and {"answer", "components", "completion"} <= set(json.loads(lines[0]))
    # Priming teaches the answer format, which the random model never produces.
    assert primed.summary["components"]["format"]["mean"] > base.summary["components"]["format"]["mean"] + 0.5

    comparison = compare_runs(store, base.run_id, primed.run_id)
    assert comparison.reward.n == 6
    assert comparison.reward.mean_diff == pytest.approx(
        primed.summary["mean_reward"] - base.summary["mean_reward"]
    )
    assert comparison.reward.ci95[0] <= comparison.reward.mean_diff <= comparison.reward.ci95[1]
    assert comparison.samples and comparison.samples[0].answer


def test_building_a_tiny_model_leaves_the_callers_random_stream_alone():
    """A run that builds the model on first use samples exactly like one that finds it cached."""
    import torch

    from rewardlab.models.tiny import build_tiny_model, build_tiny_tokenizer

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = build_tiny_model("tiny", build_tiny_tokenizer(), seed=0)
    assert torch.equal(torch.rand(3), expected)
    second = build_tiny_model("tiny", build_tiny_tokenizer(), seed=0)  # and the build is still seeded
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True))
