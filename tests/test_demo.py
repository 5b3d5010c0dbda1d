"""The demo's plumbing, end to end, at a size that takes seconds (the real numbers are in the README)."""

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.runs import RunStore

pytestmark = pytest.mark.slow  # scheduled first: see conftest.py


def test_demo_writes_summary_report_and_prints_the_summary_path_last(tmp_path):
    overrides = [
        "sft.max_steps=40",
        "sft.batch_size=16",
        "train.max_steps=2",
        "train.prompts_per_step=2",
        "train.group_size=4",
        "eval.rollouts_per_example=2",
        "env.args={level=[1, 2], num_train=60, num_eval=6, teacher='careless', slip_rate=0.7}",
    ]
    args = ["demo", "--out", str(tmp_path / "runs"), "--seed", "3"]
    for override in overrides:
        args += ["--set", override]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    last_line = result.output.strip().splitlines()[-1].strip()
    summary_path = Path(last_line)
    assert summary_path.name == "summary.json" and summary_path.exists()
    summary = json.loads(summary_path.read_text())
    low, high = summary["difference"]["ci95"]
    assert low <= summary["difference"]["mean"] <= high
    base, tuned = summary["base"]["mean_reward"], summary["tuned"]["mean_reward"]
    assert summary["difference"]["mean"] == pytest.approx(tuned - base)
    assert summary["wall_seconds"] > 0 and {"sft", "train", "eval_base", "eval_tuned"} <= set(summary["runs"])
    assert "control" in summary and "greedy" in summary
    fresh = summary["fresh"]  # the same two models, paired on newly generated examples too
    assert fresh["n"] == 6 and fresh["ci95"][0] <= fresh["mean"] <= fresh["ci95"][1]
    assert {"base", "tuned"} == set(fresh["runs"]) and "relative" in fresh
    verdict = summary["verdict"]  # judged on held-out and fresh; priced on the GRPO run alone
    assert verdict["outcome"] in ("pass", "fail") and verdict["cost"]["runs"] == [summary["runs"]["train"]]

    report = Path(summary["report"])
    text = report.read_text()
    for heading in (
        "## Held-out results",
        "## Fresh data",
        "## Verdict",
        "## How we know RL, not more SFT, moved the number",
        "## By `needs_carry`",
        "## Training curves",
    ):
        assert heading in text
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {"figures/reward.png", "figures/entropy.png", "figures/clip_fraction.png"} <= set(images)
    for relative in images:
        assert (report.parent / relative).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


DEMO_ON_ANOTHER_ENVIRONMENT = """
control = false

[env]
name = "event_selection"
args = { level = 1, num_train = 40, num_eval = 4 }

[sft]
max_steps = 2
batch_size = 2

[sft.lora]
enabled = true
rank = 4

[train]
max_steps = 1
prompts_per_step = 2
group_size = 2

[eval]
rollouts_per_example = 1
greedy = false
breakdown = ["num_events", "needs_carry"]

[eval.sampling]
max_new_tokens = "auto"
"""


def test_the_demo_is_the_same_pipeline_on_another_environment(tmp_path):
    """From one TOML file: another environment, SFT as a LoRA adapter (merged before GRPO adds its own), the
    environment's token budget, a breakdown by its info keys, no control; the report says only what the
    environment says of itself."""
    config = tmp_path / "demo.toml"
    config.write_text(DEMO_ON_ANOTHER_ENVIRONMENT)
    runs = tmp_path / "runs"
    result = CliRunner().invoke(app, ["demo", "--config", str(config), "--out", str(runs)])
    assert result.exit_code == 0, result.output
    [path] = [line.strip() for line in result.output.splitlines() if line.strip().endswith("summary.json")]
    summary = json.loads(Path(path).read_text())
    assert "control" not in summary and "greedy" not in summary and summary["fresh"]["n"] == 4
    store = RunStore(runs)
    train_run = store.get(summary["runs"]["train"])
    primed = Path(train_run.config["model"]["name_or_path"])
    assert primed.name == "merged" and (primed / "config.json").exists()
    assert primed.parent == store.get(summary["runs"]["sft"]).dir and train_run.config["lora"]["enabled"]
    eval_run = store.get(summary["base"]["run"])
    assert eval_run.summary["max_new_tokens"] == 16  # "auto": the environment's budget for the tiny model
    text = Path(summary["report"]).read_text()
    assert "Environment `event_selection`: Select low-productivity events" in text
    assert "## By `num_events`" in text and "needs_carry" not in text  # a key no example has: no section
    assert "## How we know RL" not in text and "## Fresh data" in text
    assert not re.search("carry|borrow|teacher|arithmetic", text)


def test_demo_over_seeds_reports_each_seed_and_the_spread(tmp_path):
    overrides = [
        "sft.max_steps=5",
        "train.max_steps=1",
        "train.prompts_per_step=2",
        "train.group_size=2",
        "eval.rollouts_per_example=1",
        "eval.greedy=false",
        "eval.fresh=false",
        "control=false",
        "env.args={level=2, num_train=40, num_eval=5}",
    ]
    args = ["demo", "--out", str(tmp_path / "runs"), "--seed", "3", "--seeds", "2"]
    for override in overrides:
        args += ["--set", override]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(Path(result.output.strip().splitlines()[-1].strip()).read_text())
    assert [row["seed"] for row in summary["per_seed"]] == [3, 4]
    differences = [row["difference"] for row in summary["per_seed"]]
    spread = summary["spread"]["difference"]
    assert spread["mean"] == pytest.approx(sum(differences) / 2)
    assert spread["sd"] == pytest.approx(abs(differences[0] - differences[1]) / 2**0.5)
    assert "held-out difference over 2 seeds" in result.output
    store = RunStore(tmp_path / "runs")
    parent = next(run for run in store.list(kind="demo") if run.name == "demo over 2 seeds")
    children = [run for run in store.list(kind="demo") if run.parent == parent.id]
    assert len(children) == 2 and (parent.dir / "seeds.md").read_text().count("| 3 |") == 1
