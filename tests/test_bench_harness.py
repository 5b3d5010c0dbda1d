"""The TRL side-by-side harness runs: one tiny step of each trainer on the same prompts (no timing here)."""

import dataclasses
import sys
from pathlib import Path

import pytest

pytest.importorskip("trl", reason="the benchmark's peer is installed with the dev or bench extra")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench_grpo_vs_trl as bench  # noqa: E402


def test_both_trainers_take_the_same_steps_on_the_same_prompts(tmp_path):
    small = dict(steps=2, warmup=1, sft_steps=0, prompts_per_step=2, group_size=2, max_new_tokens=4)
    config = dataclasses.replace(bench.CONFIGS["tiny"], **small)
    model_dir = bench.prepare_model(config, tmp_path / "cache")
    results = {}
    for trainer, run in bench.RUNNERS.items():
        spec = bench.RunSpec(trainer, config, str(model_dir), 0, 1, True, str(tmp_path / trainer))
        results[trainer] = run(spec)
    ours, theirs = results["rewardlab"], results["trl"]
    assert ours.prompts_seen == theirs.prompts_seen and len(ours.prompts_seen) == 2
    for result in (ours, theirs):
        assert len(result.rewards) == 2 and len(result.step_seconds) == 1 and result.peak_rss_mb > 0
        assert all(0 < tokens <= 2 * 2 * 4 for tokens in result.completion_tokens)
    shape = bench.model_shape(model_dir, config)
    assert bench.step_flops(shape, [10, 12], 2, 16.0) > bench.step_flops(shape, [10, 12], 2, 8.0) > 0
