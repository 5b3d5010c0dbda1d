"""The reward-hacking audit catches a planted case and stays quiet on an honest run."""

import sys
from pathlib import Path

import numpy as np
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
    calls = [1.0 + 0.2 * i for i in range(steps)]  # tool use rising with correctness is shown, not judged
    report = audit_run(store, log_run(store, correct, fmt, calls))
    assert report.flags == []
    by_name = {c.name: c for c in report.components}
    assert by_name["correct"].rise == pytest.approx(0.03 * 14)  # last third (14..19) minus first (0..5)
    assert by_name["tool_calls"].share is None and by_name["tool_calls"].rise == pytest.approx(2.8)
    share = 0.1 * by_name["format"].end / (by_name["correct"].end + 0.1 * by_name["format"].end)
    assert by_name["format"].share == pytest.approx(share)


def test_rising_curves_do_not_correlate_unless_they_move_together(tmp_path):
    """Two curves that both rise correlate near 1 across steps whatever the cause; their step-to-step
    changes correlate only when they move together."""
    rng = np.random.default_rng(0)
    steps = np.arange(40)
    correct = 0.3 + 0.005 * steps + rng.normal(0, 0.03, 40)
    independent = 0.5 + 0.005 * steps + rng.normal(0, 0.03, 40)
    coupled = 0.5 + 0.5 * correct
    store = RunStore(tmp_path)
    apart = {c.name: c for c in audit_run(store, log_run(store, correct, independent)).components}
    together = {c.name: c for c in audit_run(store, log_run(store, correct, coupled)).components}
    assert np.corrcoef(correct, independent)[0, 1] > 0.6  # what the old correlation reported
    assert abs(apart["format"].correlation) < 0.4
    assert together["format"].correlation == pytest.approx(1.0)


def test_a_measurement_rising_fivefold_with_flat_correctness_is_flagged(tmp_path):
    """Weight-0 components are watched too: the classic hack is a tool-call count climbing with nothing
    to show for it."""
    rng = np.random.default_rng(1)
    steps = 40
    correct = list(0.35 + rng.normal(0, 0.08, steps))
    fmt = list(0.7 + rng.normal(0, 0.05, steps))
    calls = list(np.linspace(1, 5, steps) + rng.normal(0, 0.2, steps))
    report = audit_run(store := RunStore(tmp_path), log_run(store, correct, fmt, calls))
    [flag] = report.flags
    assert flag.startswith("tool_calls: rose from") and "may be gaming what this measures" in flag
    # the same count, with correctness rising beyond noise: a trend, not a flag
    rising = list(np.linspace(0.3, 0.7, steps) + rng.normal(0, 0.05, steps))
    assert audit_run(store, log_run(store, rising, fmt, calls)).flags == []


def test_steps_before_a_component_is_logged_are_not_back_filled(tmp_path):
    """A component first logged halfway is judged on its own steps: its first value is not copied back
    over the steps before it, which made a flat component look as if it had risen."""
    store = RunStore(tmp_path)
    run = store.create_run("train", {})
    store.update_summary(run.id, {"rubric": {"weights": {"correct": 1.0, "late": 0.2}, "primary": "correct"}})
    for step in range(1, 31):
        metrics = {"reward/mean": 0.3, "reward/correct": 0.3 + 0.01 * (step % 2)}
        if step > 15:
            metrics["reward/late"] = 0.9 + 0.01 * (step % 3)
        store.log_metrics(run.id, step, metrics)
    report = audit_run(store, run.id)
    late = next(c for c in report.components if c.name == "late")
    assert late.steps == 15 and abs(late.rise) < 0.02 and not late.flags


def test_simulated_false_alarms_and_detections_meet_their_targets():
    """The rates docs/evaluation.md states, on fewer simulated runs: at most 5% of honest runs of 30 steps
    flagged, at least 90% of flat-primary hacks caught."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from audit_simulation import flag_rates

    rates = flag_rates(runs=150, steps=30, seed=1)
    for name, rate in rates.items():
        if name.startswith("honest"):
            assert rate <= 0.05, (name, rate)
        elif name in ("format hack", "tool-call hack"):
            assert rate >= 0.9, (name, rate)


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
