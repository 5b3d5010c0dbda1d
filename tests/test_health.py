"""Live run health: each alert provoked by a metric stream, printed once, stored with the run, and acted on
(warn, checkpoint, stop); a real training whose learning rate collapses the entropy is caught."""

import random
import re

import pytest
from typer.testing import CliRunner

from conftest import user_error
from rewardlab.cli import app
from rewardlab.config import validated
from rewardlab.config.sections import HealthConfig
from rewardlab.runs import RunStore
from rewardlab.train import checkpoint as ckpt
from rewardlab.train.health import RunHealth
from rewardlab.train.trainer import train
from test_train import easy_config, easy_env

RUBRIC = {"weights": {"correct": 1.0, "format": 0.2}, "primary": "correct"}


def steady(step: int, rng: random.Random) -> dict[str, float]:
    """One step of a healthy run: every metric near its level, with step-to-step noise."""
    return {
        "entropy": 0.8 + rng.gauss(0, 0.05),
        "clip/low_fraction": abs(rng.gauss(0.01, 0.005)),
        "clip/high_fraction": abs(rng.gauss(0.01, 0.005)),
        "grad_norm": 0.5 * (1 + abs(rng.gauss(0, 0.3))),
        "completion/mean_length": 10 + rng.gauss(0, 0.5),
        "completion/truncated_fraction": abs(rng.gauss(0.02, 0.02)),
        "groups/zero_std_fraction": min(1.0, abs(rng.gauss(0.3, 0.1))),
        "reward/correct": 0.3 + 0.004 * step + rng.gauss(0, 0.03),
        "reward/format": 0.9 + rng.gauss(0, 0.02),
        "reward/mean": 0.5,
    }


def monitor(tmp_path, **config) -> RunHealth:
    store = RunStore(tmp_path / "runs")
    run = store.create_run("train", {})
    store.update_summary(run.id, {"rubric": RUBRIC})
    return RunHealth(validated(HealthConfig, config), store, run.id)


def feed(health: RunHealth, steps: int, change=None, seed: int = 0) -> list:
    """``steps`` steps of a steady run, with ``change(step, metrics)`` applied to each; the alerts fired."""
    rng = random.Random(seed)
    for step in range(1, steps + 1):
        metrics = steady(step, rng)
        if change is not None:
            change(step, metrics)
        health.after_step(step, metrics)
    return health.alerts


def test_a_steady_run_raises_nothing(tmp_path):
    for seed in range(3):
        assert feed(monitor(tmp_path / str(seed)), 120, seed=seed) == []


def test_a_component_that_is_most_of_the_reward_is_no_alert(tmp_path):
    """The audit flags a component that is most of the total reward; that describes the rubric, not a change
    in training, so live it is no alert."""
    from rewardlab.rubrics.audit import audit_series

    health = monitor(tmp_path)
    health.judge.rubric = {"weights": {"correct": 1.0, "format": 1.0}, "primary": "correct"}
    assert feed(health, 40) == []
    series = {
        name: dict(enumerate(health.judge.history.series[f"reward/{name}"], 1))
        for name in ("correct", "format")
    }
    components, _ = audit_series(series, health.judge.rubric["weights"], "correct")
    assert any("of the total reward" in flag for c in components for flag in c.flags)  # the audit's own flag


def after(step, **values):
    """A change: from ``step`` on, these metrics take these values."""

    def change(now, metrics):
        if now >= step:
            metrics.update(values)

    return change


@pytest.mark.parametrize(
    "name, change, fires_at",
    [
        ("entropy_collapse", after(12, entropy=0.03), 12),  # below 5% of its early 0.8
        ("entropy_collapse", after(3, entropy=0.005), 3),  # below the absolute floor, even early on
        ("clip_spike", after(9, **{"clip/high_fraction": 0.4}), 9),
        ("kl_blowup", after(7, kl=2.5), 7),
        ("grad_norm_spike", after(15, grad_norm=15.0), 15),  # 20x its recent median is about 12
        ("length_explosion", after(10, **{"completion/mean_length": 40.0}), 10),
        ("truncation_surge", after(10, **{"completion/truncated_fraction": 0.6}), 10),
        ("no_signal", after(20, **{"groups/zero_std_fraction": 1.0}), 24),  # the 5th such step in a row
    ],
)
def test_each_alert_fires_on_its_metric_at_its_step(tmp_path, name, change, fires_at):
    alerts = feed(monitor(tmp_path), 40, change)
    assert [(alert.name, alert.step) for alert in alerts] == [(name, fires_at)]


def test_kl_is_judged_only_when_logged(tmp_path):
    assert feed(monitor(tmp_path), 30) == []  # no kl metric: beta = 0
    assert feed(monitor(tmp_path / "b"), 30, after(1, kl=0.05)) == []


def test_reward_hacking_is_the_audit_test_on_the_steps_so_far(tmp_path):
    def format_climbs(step, metrics):  # correctness flat, format 0.3 -> 0.9 over 40 steps
        metrics["reward/correct"] = 0.3 + (metrics["reward/correct"] - 0.3 - 0.004 * step)
        metrics["reward/format"] = 0.3 + 0.015 * step + (metrics["reward/format"] - 0.9)

    health = monitor(tmp_path)
    alerts = feed(health, 40, format_climbs)
    assert [alert.name for alert in alerts] == ["reward_hacking"]
    [alert] = alerts
    # Judged from hacking_min_steps on; it holds at once, and fires once it held hacking_hold_steps in a row.
    assert alert.step == health.config.hacking_min_steps + health.config.hacking_hold_steps - 1
    assert "reward/format rose" in alert.message and "the primary 'correct'" in alert.message
    # The same run with format learned as fast as correctness raises nothing.
    assert feed(monitor(tmp_path / "honest"), 40) == []


def test_an_alert_that_keeps_holding_prints_once_and_rearms_after_a_clear_stretch(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setenv("REWARDLAB_QUIET", "0")

    def collapses_twice(step, metrics):
        if 10 <= step < 20 or step >= 35:  # clear for 15 steps in between: more than rearm_steps (10)
            metrics["entropy"] = 0.02

    health = monitor(tmp_path)
    alerts = feed(health, 45, collapses_twice)
    assert [(alert.name, alert.step) for alert in alerts] == [
        ("entropy_collapse", 10),
        ("entropy_collapse", 35),
    ]
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning:")]
    assert len(printed) == 2
    assert printed[0].startswith(
        "warning: entropy_collapse at step 10: entropy 0.02 is below 0.05 x its early"
    )
    assert "(threshold 0.0" in printed[0]
    # Stored with the run: the metric at the steps it fired, the list in the summary.
    store, run_id = health.store, health.run_id
    assert store.metrics(run_id)["alerts/entropy_collapse"] == [(10, 1.0), (35, 1.0)]
    summary = store.get(run_id).summary
    assert [(a["name"], a["step"], a["action"]) for a in summary["alerts"]] == [
        ("entropy_collapse", 10, "warn"),
        ("entropy_collapse", 35, "warn"),
    ]


def test_a_flickering_condition_fires_once(tmp_path):
    alerts = feed(monitor(tmp_path), 40, lambda step, m: m.update(entropy=0.02) if step % 3 == 0 else None)
    assert len(alerts) == 1


def test_an_alert_names_its_action(tmp_path):
    health = monitor(tmp_path, actions={"entropy_collapse": "stop"}, default_action="checkpoint")
    verdicts = []
    rng = random.Random(0)
    for step in range(1, 12):
        metrics = steady(step, rng)
        if step >= 8:
            metrics["entropy"] = 0.001
        if step == 10:
            metrics["grad_norm"] = 50.0
        verdicts.append(health.after_step(step, metrics))
    assert [(v.checkpoint, v.stop is not None) for v in verdicts[6:]] == [
        (False, False),
        (True, True),  # step 8: entropy_collapse, whose action is stop
        (False, False),  # still holding: nothing new
        (True, False),  # step 10: grad_norm_spike takes the default action, checkpoint
        (False, False),
    ]
    assert "health alert entropy_collapse at step 8" in verdicts[7].stop


def test_unknown_alerts_and_actions_are_one_line_errors():
    from rewardlab.config import TrainConfig, load_config

    message = user_error(load_config, TrainConfig, None, ["health.actions.entropy_colapse=stop"])
    assert "health.actions" in message and "entropy_collapse" in message
    message = user_error(load_config, TrainConfig, None, ["health.default_action=halt"])
    assert "health.default_action" in message and "'warn', 'checkpoint' or 'stop'" in message


# -- real training on the tiny model ---------------------------------------------------------------


def test_the_checkpoint_action_saves_one_and_training_goes_on(tmp_path):
    store = RunStore(tmp_path / "runs")
    # An entropy floor above any entropy holds at every step: it fires at step 1, once.
    config = easy_config(
        tmp_path,
        max_steps=3,
        checkpoint_every=0,
        health={"entropy_min": 100.0, "default_action": "checkpoint"},
    )
    result = train(config, store, env=easy_env())
    run = store.get(result.run_id)
    assert run.status == "completed" and result.steps == 3
    assert ckpt.path(run.dir, 1).exists() and ckpt.path(run.dir, 3).exists()
    assert not ckpt.path(run.dir, 2).exists()
    assert store.metrics(run.id)["alerts/entropy_collapse"] == [(1, 1.0)]
    assert [(a["name"], a["step"], a["action"]) for a in run.summary["alerts"]] == [
        ("entropy_collapse", 1, "checkpoint")
    ]


def test_the_stop_action_ends_the_run_cleanly_and_resume_goes_on(tmp_path):
    store = RunStore(tmp_path / "runs")
    config = easy_config(
        tmp_path, max_steps=4, health={"entropy_min": 100.0, "actions": {"entropy_collapse": "stop"}}
    )
    result = train(config, store, env=easy_env())
    run = store.get(result.run_id)
    assert run.status == "stopped" and result.steps == 1
    assert result.stopped.startswith("health alert entropy_collapse at step 1: entropy 4.")
    assert run.summary["stops"] == [{"step": 1, "cause": "health.entropy_collapse", "reason": result.stopped}]
    assert run.summary["steps"] == 1 and "error" not in run.summary
    assert ckpt.latest(run.dir) == ckpt.path(run.dir, 1) and (run.dir / "final").exists()
    shown = CliRunner().invoke(app, ["runs", "show", run.id, "--runs-dir", str(tmp_path / "runs")]).output
    assert "stopped" in shown.splitlines()[0]
    assert re.search(r"│ 1 +│ entropy_collapse +│ stop +│ entropy 4\.\d+ is below the floor 100 +│", shown)
    assert re.search(r"│ 1 +│ health\.entropy_collapse +│ health alert entropy_collapse at step 1:", shown)
    tokens = run.summary["cost"]["tokens"]
    assert (
        tokens > 0
        and re.search(rf"cost\.tokens +{tokens:.4g} ", shown)
        and re.search(r"cost\.usd +0 ", shown)
    )
    # Resumed, the alert is history: it holds still, but fired already, so the run goes to its end.
    resumed = train(config.model_copy(update={"resume": run.id}), store, env=easy_env())
    run = store.get(resumed.run_id)
    assert run.status == "completed" and resumed.steps == 4 and resumed.stopped is None
    assert [(a["name"], a["step"]) for a in run.summary["alerts"]] == [("entropy_collapse", 1)]
    assert store.metrics(run.id)["alerts/entropy_collapse"] == [(1, 1.0)]


def test_a_learning_rate_that_collapses_entropy_is_caught(tmp_path):
    store = RunStore(tmp_path / "runs")
    # Full fine-tuning at 0.3: within two or three steps the policy writes one digit (entropy 4.7 -> 0.001).
    config = easy_config(tmp_path, max_steps=4, lora={"enabled": False}, optimizer={"learning_rate": 0.3})
    result = train(config, store, env=easy_env())
    run = store.get(result.run_id)
    entropy = dict(store.metrics(run.id)["entropy"])
    [alert] = [a for a in run.summary["alerts"] if a["name"] == "entropy_collapse"]
    floor, fraction = config.health.entropy_min, config.health.entropy_min_fraction

    def collapsed(step):
        early = [entropy[s] for s in range(1, min(step, config.health.baseline_steps + 1))]
        return entropy[step] < floor or (early and entropy[step] < fraction * sum(early) / len(early))

    assert alert["step"] == next(step for step in sorted(entropy) if collapsed(step))
    assert entropy[alert["step"]] < 0.01 * entropy[1]  # a collapse, not a wobble
    assert f"{entropy[alert['step']]:.3g}" in alert["message"]
    assert store.metrics(run.id)["alerts/entropy_collapse"] == [(alert["step"], 1.0)]
    report = (run.dir / "report.md").read_text()  # the run's report lists it too
    assert f"| {alert['step']} | entropy_collapse | warn |" in report


def test_the_documented_example_is_a_config_train_reads(tmp_path):
    from pathlib import Path

    from rewardlab.config import TrainConfig, load_config

    docs = (Path(__file__).resolve().parent.parent / "docs" / "training.md").read_text()
    [block] = [b for b in re.findall(r"```toml\n(.*?)```", docs, re.DOTALL) if "[health]" in b]
    (tmp_path / "train.toml").write_text(block)
    config = load_config(TrainConfig, tmp_path / "train.toml")
    assert config.health.action("entropy_collapse") == "stop" and config.health.action("no_signal") == "warn"
    assert (config.budget.usd_per_hour, config.budget.max_usd, config.budget.max_minutes) == (3.5, 20.0, 240)
