"""The compare verdict: PASS only on held-out and fresh alike, FAIL naming the condition, and the cost per
point of improvement read from the runs a model descends from."""

import pytest
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.config import CompareConfig, SFTConfig
from rewardlab.eval.compare import Comparison, ModeComparison, run_compare
from rewardlab.eval.stats import paired_comparison, relative_gain
from rewardlab.eval.verdict import (
    DEFAULT_BAR,
    check_mode,
    data_flag,
    judge,
    render,
    training_cost,
)
from rewardlab.runs import RunStore
from rewardlab.train.sft import run_sft


def mode(name: str, a: list[float], b: list[float]) -> ModeComparison:
    """One data mode compared as compare does it: per-example primary scores, paired, with the relative
    gain and its bootstrap interval."""
    scores_a = {f"ex{i}": value for i, value in enumerate(a)}
    scores_b = {f"ex{i}": value for i, value in enumerate(b)}
    paired = paired_comparison(scores_a, scores_b)
    comparison = Comparison(
        "eval-a",
        "eval-b",
        paired,
        components={"correct": paired},
        relative=relative_gain(scores_a, scores_b, "correct"),
    )
    return ModeComparison(name, comparison, examples=len(a))


# 100 examples, A right on half of them. B right on 80: +60%, far above the bar, interval well above 0.
STRONG = ([1.0] * 50 + [0.0] * 50, [1.0] * 80 + [0.0] * 20)
# B right on 4 more than A and wrong on none of A's: +8%, every resample at or above 0, below a 10% bar.
SMALL = ([1.0] * 50 + [0.0] * 50, [1.0] * 54 + [0.0] * 46)
# 10 examples: B wins 3 and loses 1: +40%, but the interval reaches below 0.
NOISY = ([1.0] * 5 + [0.0] * 5, [1.0] * 4 + [0.0] + [1.0] * 3 + [0.0] * 2)


def test_pass_needs_the_bar_and_the_interval_on_held_out_and_fresh():
    verdict = judge([mode("held-out", *STRONG), mode("fresh", *STRONG)])
    assert verdict.outcome == "pass" and verdict.bar == DEFAULT_BAR == 0.10
    assert verdict.component == "correct" and not any(check.failed for check in verdict.checks)
    assert verdict.checks[0].relative == pytest.approx(0.6) and verdict.checks[0].ci95[0] > 0.1
    assert verdict.points == pytest.approx(30.0)  # 0.5 -> 0.8 on held-out
    lines = render(verdict, "tuned")
    assert (
        lines[0].startswith("verdict: PASS — tuned clears the bar")
        and "10% relative gain on correct" in lines[0]
    )
    assert lines[1].startswith("  held-out: +60.0% [+") and lines[1].endswith("at least 10%, CI above 0")


def test_a_gain_below_the_bar_fails_with_its_numbers():
    small = mode("held-out", *SMALL)
    assert small.comparison.relative.ci95[0] > 0  # the interval alone would pass
    verdict = judge([small, mode("fresh", *STRONG)])
    assert verdict.outcome == "fail"
    held_out, fresh = verdict.checks
    assert held_out.failed == ["below the 10% bar"] and not fresh.failed
    low, high = small.comparison.relative.ci95
    assert verdict.reasons[0] == f"held-out: +8.0% [{low:+.1%}, {high:+.1%}] — below the 10% bar"
    assert render(verdict)[0].startswith("verdict: FAIL — bar: 10% relative gain on correct")


def test_an_interval_reaching_zero_fails_even_above_the_bar():
    noisy = mode("held-out", *NOISY)
    assert noisy.comparison.relative.value == pytest.approx(0.4) and noisy.comparison.relative.ci95[0] <= 0
    verdict = judge([noisy, mode("fresh", *STRONG)])
    assert verdict.outcome == "fail"
    assert verdict.checks[0].failed == ["the 95% CI's lower bound is not above 0"]
    # both conditions missed: both named
    both = judge([mode("held-out", *STRONG), mode("fresh", [1.0] * 5 + [0.0] * 5, [1.0] * 5 + [0.0] * 5)])
    assert both.checks[1].failed == ["below the 10% bar", "the 95% CI's lower bound is not above 0"]


def test_fresh_failing_fails_a_held_out_pass():
    verdict = judge([mode("held-out", *STRONG), mode("fresh", *SMALL)])
    assert verdict.outcome == "fail" and not verdict.checks[0].failed
    assert verdict.checks[1].failed == ["below the 10% bar"]
    assert any(line.startswith("  fresh: +8.0%") and "below the 10% bar" in line for line in render(verdict))


def test_no_relative_gain_is_a_fail_not_a_pass():
    verdict = judge([mode("held-out", [0.0] * 40, [1.0] * 40), mode("fresh", *STRONG)])
    assert verdict.outcome == "fail"
    assert verdict.checks[0].failed == ["no relative gain: the base mean is 0, not positive"]


def test_no_verdict_without_fresh_and_the_flag_that_adds_it():
    verdict = judge([mode("held-out", *STRONG)], hint="add it with --data held-out,fresh")
    assert verdict.outcome == "none" and verdict.hint == "add it with --data held-out,fresh"
    lines = render(verdict)
    assert lines[0] == "no verdict: needs held-out and fresh"
    assert "  fresh: not run; add it with --data held-out,fresh" in lines
    skipped = ModeComparison("fresh", None, skipped="environment 'wordle' cannot generate fresh examples")
    verdict = judge([mode("held-out", *STRONG), skipped], hint="add it with --data held-out,fresh")
    assert verdict.outcome == "none" and verdict.hint is None  # the flag would not help
    assert verdict.reasons[1] == "fresh: skipped (environment 'wordle' cannot generate fresh examples)"
    # an adversarial mode is no substitute for fresh
    assert judge([mode("held-out", *STRONG), mode("adversarial", *STRONG)]).outcome == "none"
    assert data_flag(["held-out"]) == "--data held-out,fresh"
    assert data_flag(["held-out", "adversarial"]) == "--data held-out,fresh,adversarial"


def test_the_bar_is_a_config_field():
    assert CompareConfig().verdict_min_relative_gain == DEFAULT_BAR
    assert "verdict" in CompareConfig.model_fields["verdict_min_relative_gain"].description
    modes = [mode("held-out", *SMALL), mode("fresh", *SMALL)]
    lower = judge(modes, bar=CompareConfig(verdict_min_relative_gain=0.05).verdict_min_relative_gain)
    assert lower.outcome == "pass" and lower.bar == 0.05
    assert "5% relative gain" in render(lower)[0] and render(lower)[1].endswith("at least 5%, CI above 0")
    assert judge(modes, bar=0.125).checks[0].failed == ["below the 12.5% bar"]
    at_the_bar = mode("held-out", [1.0] * 40 + [0.0] * 60, [1.0] * 44 + [0.0] * 56)  # 0.4 -> 0.44
    assert at_the_bar.comparison.relative.value < 0.10  # 0.0999...: floating point, not a miss
    assert check_mode("held-out", at_the_bar.comparison, 0.10).failed == []
    result = CliRunner().invoke(
        app, ["compare", "a", "b", "--env", "arithmetic", "--set", "verdict_min_relative_gain=-0.1"]
    )
    assert result.exit_code == 2 and "'verdict_min_relative_gain'" in result.output, result.output


def _training_run(store, kind, model, summary):
    run = store.create_run(kind, {"model": {"name_or_path": model}}, manifest={})
    store.finish(run.id, summary=summary)
    return run


@pytest.fixture
def lineage_store(tmp_path):
    """An SFT run on tiny, and a GRPO run on the SFT model, each with its recorded wall clock and cost."""
    store = RunStore(tmp_path / "runs")
    sft = _training_run(
        store, "sft", "tiny", {"wall_seconds": 138.0, "cost": {"usd": 0.12, "tokens": 1000, "flops": 2e12}}
    )
    train = _training_run(
        store,
        "train",
        str(sft.dir / "model"),
        {"wall_seconds": 600.0, "cost": {"usd": 0.30, "tokens": 5000, "flops": 8e12, "usd_per_hour": 1.8}},
    )
    for output in (sft.dir / "model", train.dir / "final"):  # where their weights would be
        output.mkdir()
    return store, sft, train


def test_cost_per_point_sums_the_runs_behind_b(lineage_store):
    store, sft, train = lineage_store
    cost = training_cost(store, str(train.dir / "final"), "tiny")  # B is the GRPO run's adapter
    assert cost.runs == [train.id, sft.id] and cost.unknown is None
    assert cost.usd == pytest.approx(0.42) and cost.wall_seconds == pytest.approx(738.0)
    assert cost.tokens == 6000 and cost.flops == pytest.approx(1e13)
    verdict = judge([mode("held-out", *STRONG), mode("fresh", *STRONG)], cost=cost)
    assert verdict.usd_per_point == pytest.approx(0.42 / 30) and verdict.minutes_per_point == pytest.approx(
        12.3 / 30
    )
    assert render(verdict)[-1] == (
        f"cost: $0.42 (12.3 min of training, 2 runs: {train.id}, {sft.id}) → $0.014 per point "
        "(+30.0 points on held-out)"
    )
    stored = verdict.to_dict()
    assert stored["cost"]["usd"] == pytest.approx(0.42) and stored["usd_per_point"] == pytest.approx(0.014)
    # from the SFT model to the GRPO one, only the GRPO run produced the difference
    assert training_cost(store, train.id, str(sft.dir / "model")).runs == [train.id]


def test_cost_follows_a_model_into_another_run_store(lineage_store, tmp_path):
    store, sft, _ = lineage_store
    elsewhere = RunStore(tmp_path / "other-runs")  # GRPO run under another --runs-dir, on the SFT model
    train = _training_run(elsewhere, "train", str(sft.dir / "model"), {"wall_seconds": 60.0})
    cost = training_cost(elsewhere, train.id, "tiny")
    assert cost.runs == [train.id, sft.id] and cost.wall_seconds == pytest.approx(198.0)
    assert cost.usd is None  # the GRPO run was not priced


def test_unpriced_runs_are_priced_in_minutes(lineage_store):
    store, sft, train = lineage_store
    store.update_summary(sft.id, {"cost": {"usd": None, "wall_seconds": 138.0}})  # not priced: no rate known
    cost = training_cost(store, train.id, "tiny")
    assert cost.usd is None and cost.wall_seconds == pytest.approx(738.0)  # a partial sum would understate it
    verdict = judge([mode("held-out", *STRONG), mode("fresh", *STRONG)], cost=cost)
    assert verdict.usd_per_point is None and verdict.minutes_per_point == pytest.approx(12.3 / 30)
    assert render(verdict)[-1].startswith("cost: unpriced (12.3 min of training, 2 runs:")
    assert render(verdict)[-1].endswith("→ 0.41 min of training per point (+30.0 points on held-out)")


def test_no_improvement_to_price(lineage_store):
    store, _, train = lineage_store
    cost = training_cost(store, train.id, "tiny")
    worse = judge([mode("held-out", *reversed(STRONG)), mode("fresh", *STRONG)], cost=cost)
    assert worse.points == pytest.approx(-30.0) and worse.usd_per_point is None
    assert render(worse)[-1].endswith("— no improvement to price (-30.0 points on held-out)")


def test_cost_unknown_for_an_endpoint_or_a_model_without_runs(lineage_store):
    store, _, train = lineage_store
    endpoint = training_cost(store, None, "tiny", label_b="hosted")
    assert endpoint.unknown == "hosted is an endpoint: the runs that trained it are not on record"
    verdict = judge([mode("held-out", *STRONG), mode("fresh", *STRONG)], cost=endpoint)
    assert verdict.usd_per_point is None and verdict.minutes_per_point is None
    assert (
        render(verdict)[-1]
        == "cost: unknown — hosted is an endpoint: the runs that trained it are not on record"
    )
    assert training_cost(store, "tiny", None).unknown == "B has no training runs in this run store"
    assert training_cost(store, "scripted:oracle", None).unknown == "B has no training runs in this run store"
    same = training_cost(store, train.id, train.id, label_a="base", label_b="tuned")
    assert same.unknown == "tuned has no training runs beyond base's in this run store"
    running = store.create_run("train", {"model": {"name_or_path": "tiny"}}, manifest={})  # never finished
    assert "neither a price nor a wall clock" in training_cost(store, running.id, "tiny").unknown


def test_verdict_is_recorded_as_a_dict():
    verdict = judge([mode("held-out", *STRONG)], hint="add it with --data held-out,fresh")
    stored = verdict.to_dict()
    assert stored["outcome"] == "none" and stored["bar"] == 0.1 and stored["reasons"] == verdict.reasons
    assert stored["modes"]["fresh"]["missing"].startswith("not run") and stored["improvement_points"] == 30.0


CARELESS = "{level=2, teacher='careless', slip_rate=0.7}"  # the teacher forgets 70% of carries


def test_compare_prints_and_records_the_verdict(tmp_path):
    """End to end: the scripted careless teacher against the oracle on both modes passes; the compare run's
    summary holds the verdict; the two held-out eval runs compared alone get no verdict."""
    runs = str(tmp_path / "runs")
    args = ["compare", "scripted:careless", "scripted:oracle", "--env", "arithmetic", "--set"]
    args += [f"env.args={CARELESS}", "--data", "held-out,fresh", "-n", "40", "-r", "1", "--runs-dir", runs]
    result = CliRunner().invoke(
        app, [*args, "--label-a", "careless", "--label-b", "oracle"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    output = result.output[result.output.index("verdict: ") :]  # after the tables
    assert output.startswith("verdict: PASS — oracle clears the bar on held-out and fresh")
    assert "cost: unknown — oracle has no training runs in this run store" in output
    store = RunStore(runs)
    [compare] = store.list(kind="compare")
    verdict = compare.summary["verdict"]
    assert verdict["outcome"] == "pass" and verdict["bar"] == 0.1 and verdict["component"] == "correct"
    assert verdict["improvement_points"] == pytest.approx(
        (compare.summary["held-out"]["mean_b"] - compare.summary["held-out"]["mean_a"]) * 100
    )  # the total is correct + format, and both always format well: the same difference
    shown = CliRunner().invoke(app, ["runs", "show", compare.id, "--runs-dir", runs], env={"COLUMNS": "200"})
    assert [line.split() for line in shown.output.splitlines() if "verdict.outcome" in line] == [
        ["verdict.outcome", "pass"]
    ]
    held_out = {
        run.config["model"]["name_or_path"]: run.id
        for run in store.list(kind="eval")
        if run.config["split"] == "eval"
    }
    eval_a, eval_b = held_out["scripted:careless"], held_out["scripted:oracle"]
    alone = run_compare(store, CompareConfig(a=eval_a, b=eval_b, runs_dir=runs))
    assert alone.verdict.outcome == "none" and not alone.verdict.checks[0].failed
    assert alone.verdict.checks[1].missing.endswith(
        "compare the two models themselves with --data held-out,fresh"
    )


def test_compare_prices_a_tiny_model_by_its_training_run(tmp_path):
    """End to end on the tiny model: B is an SFT run of it, so its wall clock is the cost; held-out alone is
    no verdict."""
    store = RunStore(tmp_path / "runs")
    sft = run_sft(
        SFTConfig.model_validate(
            {
                "env": {"name": "arithmetic", "args": {"level": 2, "num_train": 40, "num_eval": 8}},
                "max_steps": 3,
                "batch_size": 4,
                "runs_dir": str(store.root),
            }
        ),
        store,
    )
    config = CompareConfig(a="tiny", b=sft.run_id, num_examples=8, rollouts_per_example=1, samples=0)
    result = run_compare(store, config)
    verdict = result.verdict
    assert verdict.outcome == "none" and verdict.hint == "add it with --data held-out,fresh"
    assert verdict.cost.runs == [sft.run_id] and verdict.cost.usd is None
    assert verdict.cost.wall_seconds == pytest.approx(store.get(sft.run_id).summary["wall_seconds"])
    held_out = result.modes[0].comparison
    assert verdict.points == pytest.approx(held_out.components[verdict.component].mean_diff * 100)
    line = render(verdict)[-1]
    if verdict.points > 0:
        assert verdict.minutes_per_point == pytest.approx(verdict.cost.wall_seconds / 60 / verdict.points)
        assert "min of training per point" in line
    else:
        assert "no improvement to price" in line
    assert store.get(result.run_id).summary["verdict"]["cost"]["runs"] == [sft.run_id]
