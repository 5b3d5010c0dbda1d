"""The demo's plumbing, end to end, at a size that takes seconds (the real numbers are in the README)."""

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from rewardlab.cli import app


def test_demo_writes_summary_report_and_prints_the_summary_path_last(tmp_path):
    overrides = [
        "sft_steps=40",
        "sft_batch_size=16",
        "rl_steps=2",
        "rl_prompts_per_step=2",
        "rl_group_size=4",
        "eval_rollouts=2",
        "env_args={level=1, num_train=60, num_eval=6, teacher='careless', slip_rate=0.7}",
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

    report = Path(summary["report"])
    text = report.read_text()
    for heading in (
        "## Held-out results",
        "## How we know RL, not more SFT, moved the number",
        "## Training curves",
    ):
        assert heading in text
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {"figures/reward.png", "figures/entropy.png", "figures/clip_fraction.png"} <= set(images)
    for relative in images:
        assert (report.parent / relative).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
