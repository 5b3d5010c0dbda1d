"""The reward-hacking audit catches a planted case and stays quiet on an honest run."""

import pytest
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.config import TrainConfig
from rewardlab.envs import SingleTurnEnv
from rewardlab.errors import RewardlabError
from rewardlab.rubrics import Rubric
from rewardlab.rubrics.audit import audit_run, static_check
from rewardlab.runs import RunStore
from rewardlab.train.trainer import train


def test_static_check_on_weights():
    assert static_check({"correct": 1.0, "format": 0.1}, "correct") == []
    [warning] = static_check({"correct": 1.0, "format": 2.0}, "correct")
    assert "format (2)" in warning and "can reach 2" in warning
    assert static_check({"correct": 1.0, "a": 0.5, "b": 0.5}, "correct")  # together they tie the primary
    assert static_check({"correct": 1.0, "tool_calls": 0.0}, "correct") == []  # measurements do not count


def test_planted_hack_is_flagged(tmp_path):
    """A rubric over-weights an easy 'format' reward and correctness is out of reach: the policy learns
    the format, and the audit says so."""

    def correct(completion: str, answer: str) -> float:
        return float(completion.strip() == answer)  # a 40-character secret: never guessed

    def format_reward(completion: str) -> float:
        return sum(c.isdigit() for c in completion) / max(len(completion), 1)

    rows = [{"prompt": f"q{i}", "answer": "x" * 40} for i in range(32)]
    env = SingleTurnEnv(dataset=rows, rubric=Rubric([correct, format_reward], weights=[1.0, 2.0]))
    store = RunStore(tmp_path / "runs")
    config = TrainConfig.model_validate(
        {
            "runs_dir": str(tmp_path / "runs"),
            "max_steps": 12,
            "prompts_per_step": 4,
            "group_size": 8,
            "optimizer": {"learning_rate": 3e-3},
            "lora": {"enabled": False},
            "sampling": {"max_new_tokens": 6},
        }
    )
    run_id = train(config, store, env=env).run_id

    report = audit_run(store, run_id)
    fmt = next(c for c in report.components if c.name == "format_reward")
    assert fmt.rise > 0.2
    assert any("rose" in flag and "while the primary 'correct' moved +0.000" in flag for flag in fmt.flags)
    assert report.static_warnings and "format_reward (2)" in report.static_warnings[0]

    result = CliRunner().invoke(app, ["audit", run_id, "--runs-dir", str(tmp_path / "runs"), "--strict"])
    assert result.exit_code == 1 and "may be learning this component instead of the task" in result.output


def log_run(store, correct, fmt, tool_calls=None, weights=None):
    run = store.create_run("train", {})
    store.update_summary(
        run.id,
        {
            "rubric": {
                "weights": weights or {"correct": 1.0, "format": 0.1, "tool_calls": 0.0},
                "primary": "correct",
            }
        },
    )
    for step, (c, f) in enumerate(zip(correct, fmt, strict=True), start=1):
        metrics = {"reward/mean": c + 0.1 * f, "reward/correct": c, "reward/format": f}
        if tool_calls:
            metrics["reward/tool_calls"] = tool_calls[step - 1]
        store.log_metrics(run.id, step, metrics)
    return run.id


def test_honest_run_has_no_flags_and_measurements_are_trends(tmp_path):
    store = RunStore(tmp_path)
    steps = 20
    correct = [0.3 + 0.03 * i for i in range(steps)]
    fmt = [0.8 + 0.01 * i for i in range(steps)]
    calls = [1.0 + 0.2 * i for i in range(steps)]  # rising tool use is shown, not judged
    report = audit_run(store, log_run(store, correct, fmt, calls))
    assert report.flags == []
    by_name = {c.name: c for c in report.components}
    assert by_name["correct"].rise == pytest.approx(0.03 * 16)  # last fifth (16..19) minus first fifth (0..3)
    assert by_name["tool_calls"].share is None and by_name["tool_calls"].rise == pytest.approx(3.2)
    assert by_name["format"].correlation == pytest.approx(1.0)
    share = 0.1 * by_name["format"].end / (by_name["correct"].end + 0.1 * by_name["format"].end)
    assert by_name["format"].share == pytest.approx(share)


def test_dominant_share_is_flagged(tmp_path):
    store = RunStore(tmp_path)
    run = log_run(store, [0.1] * 10, [0.9] * 10, weights={"correct": 1.0, "format": 1.0})
    report = audit_run(store, run)
    assert any("90% of the total reward" in flag for flag in report.flags)


def test_audit_user_errors(tmp_path):
    store = RunStore(tmp_path)
    eval_run = store.create_run("eval", {})
    with pytest.raises(RewardlabError, match="is a eval run; the audit reads a train run"):
        audit_run(store, eval_run.id)
    bare = store.create_run("train", {})
    with pytest.raises(RewardlabError, match="did not record its rubric"):
        audit_run(store, bare.id)
