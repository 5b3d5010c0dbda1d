"""The numbers a comparison quotes: relative gain on the primary component, errored rollouts scored 0,
warnings for small samples and dropped examples, and refusal to pair runs that were not run alike."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import user_error
from rewardlab.errors import RewardlabError
from rewardlab.eval.compare import compare_runs
from rewardlab.eval.evaluate import summarize
from rewardlab.eval.stats import SMALL_N, paired_comparison, relative_gain
from rewardlab.runs import RunStore
from rewardlab.types import Example, Rollout, ScoredRollout

EVAL_CONFIG = {
    "env": {"name": "arithmetic", "args": {}},
    "split": "eval",
    "sampling": {"temperature": 1.0},
    "rollouts_per_example": 2,
}


def scored(example_id: str, index: int, correct: float, errored: bool = False) -> ScoredRollout:
    """One rollout whose primary ``correct`` is given and whose format bonus is 0.1 (counted in the total)."""
    rollout = Rollout(Example(example_id, [{"role": "user", "content": f"q {example_id}"}]), index, [])
    components: dict[str, float | None] = {"correct": None if errored else correct, "format": 1.0}
    errors = {"correct": "boom"} if errored else {}
    return ScoredRollout(rollout, (0.0 if errored else correct) + 0.1, components, errors)


def eval_run(store: RunStore, values: dict[str, list[float | None]], config: dict | None = None) -> str:
    """An eval run whose rollouts score ``values`` (example id -> per-rollout primary; None: errored)."""
    run = store.create_run("eval", config or EVAL_CONFIG, {})
    rows = [
        scored(example_id, i, value or 0.0, errored=value is None)
        for example_id, per_rollout in values.items()
        for i, value in enumerate(per_rollout)
    ]
    store.log_rollouts(run.id, 0, "eval", rows)
    store.finish(run.id, summary={"primary": "correct"})
    return run.id


def test_relative_gain_is_on_the_primary_component_not_the_weighted_total(tmp_path):
    store = RunStore(tmp_path / "runs")
    base = eval_run(store, {f"x{i}": [1.0 if i < 20 else 0.0] * 2 for i in range(40)})
    tuned = eval_run(store, {f"x{i}": [1.0 if i < 30 else 0.0] * 2 for i in range(40)})
    comparison = compare_runs(store, base, tuned)
    # total: 0.6 -> 0.85 (+42%, format bonus included); primary: 0.5 -> 0.75 (+50%)
    assert comparison.reward.mean_diff == pytest.approx(0.25)
    assert comparison.relative.component == "correct"
    assert comparison.relative.value == pytest.approx(0.5)
    low, high = comparison.relative.ci95
    assert 0.1 < low < 0.5 < high < 1.5


def test_relative_gain_is_not_given_for_a_base_at_or_below_zero():
    zero = relative_gain({"a": 0.0, "b": 0.0}, {"a": 1.0, "b": 0.0})
    assert zero.value is None and "not positive" in zero.reason
    negative = relative_gain({"a": -0.5, "b": -0.5}, {"a": -0.25, "b": -0.25})
    assert negative.value is None  # never "-50%" for an improvement


def test_relative_gain_interval_covers_the_true_ratio():
    """Simulated examples with a known ratio of means (0.4 -> 0.5, +25%): the interval covers it about 95%
    of the time."""
    rng = np.random.default_rng(1)
    covered = 0
    trials = 150
    for trial in range(trials):
        a = rng.binomial(1, 0.4, 150).astype(float)
        b = np.clip(a + rng.choice([0.0, 1.0, -1.0], 150, p=[0.8, 0.15, 0.05]), 0, 1)
        # the truth of this construction: E[b] = 0.4 + 0.6 * 0.15 - 0.4 * 0.05 = 0.47
        gain = relative_gain(dict(enumerate(a)), dict(enumerate(b)), num_resamples=2000, seed=trial)
        covered += gain.ci95[0] <= 0.47 / 0.4 - 1 <= gain.ci95[1]
    assert 0.88 <= covered / trials <= 0.99


def test_an_errored_rollout_scores_zero_and_the_clean_comparison_is_kept_beside(tmp_path):
    store = RunStore(tmp_path / "runs")
    examples = [f"x{i}" for i in range(40)]
    base = eval_run(store, {e: [0.0, 0.0] for e in examples})
    # B answers every easy example and crashes the reward on the 10 hard ones: leaving those out would
    # flatter it (1.0 on the rest) and silently shrink n.
    tuned = eval_run(store, {e: [1.0, 1.0] if i >= 10 else [None, None] for i, e in enumerate(examples)})
    comparison = compare_runs(store, base, tuned)
    assert comparison.reward.n == 40
    assert comparison.reward.mean_b == pytest.approx(0.75 * 1.1)
    assert comparison.errors_b == 20
    assert comparison.reward_without_errors.n == 30
    assert comparison.reward_without_errors.mean_b == pytest.approx(1.1)
    assert any("errored rollouts scored 0" in w for w in comparison.warnings)


def test_eval_summary_counts_errored_rollouts_as_zero_and_shows_the_mean_without_them():
    rows = [scored("a", 0, 1.0), scored("a", 1, 1.0), scored("b", 0, 1.0), scored("b", 1, 0.0, errored=True)]
    summary = summarize(rows, "correct", 2, 1.0, 0.0)
    assert summary["mean_reward"] == pytest.approx(3 * 1.1 / 4)
    assert summary["mean_reward_without_errors"] == pytest.approx(1.1)
    assert summary["components"]["correct"]["mean"] == pytest.approx(0.75)
    assert summary["pass@1"] == pytest.approx(0.75)  # the same rollout fails pass@k, as before
    clean = summarize(rows[:2], "correct", 2, 1.0, 0.0)
    assert "mean_reward_without_errors" not in clean


def test_examples_on_one_side_only_are_named_in_a_warning(tmp_path):
    store = RunStore(tmp_path / "runs")
    a = eval_run(store, {f"x{i}": [1.0, 0.0] for i in range(35)})
    b = eval_run(store, {f"x{i}": [1.0, 1.0] for i in range(32)})
    comparison = compare_runs(store, a, b)
    assert comparison.reward.n == 32
    assert any("3 examples evaluated on one side only" in w and "A only: 3" in w for w in comparison.warnings)


def test_small_samples_are_warned_about_and_the_interval_method_is_named():
    small = paired_comparison({"a": 0.0, "b": 0.0, "c": 0.0}, {"a": 1.0, "b": 1.0, "c": 1.0})
    assert small.ci95 == (1.0, 1.0)  # the collapse the warning is about
    assert small.warnings and f"fewer than {SMALL_N}" in small.warnings[0]
    large = paired_comparison({i: 0.0 for i in range(SMALL_N)}, {i: float(i % 2) for i in range(SMALL_N)})
    assert not large.warnings
    assert "bootstrap" in large.method and "examples" in large.method


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"env": {"name": "maze", "args": {}}}, "environment"),
        ({"env": {"name": "arithmetic", "args": {"level": 2}}}, "environment arguments"),
        ({"split": "fresh"}, "split"),
        ({"sampling": {"temperature": 0.0}}, "temperature"),
        ({"sampling": {"temperature": 1.0, "response_format": {"type": "json_object"}}}, "response format"),
        ({"rollouts_per_example": 4}, "rollouts per example"),
    ],
)
def test_runs_not_run_alike_are_refused_unless_forced(tmp_path, change, named):
    store = RunStore(tmp_path / "runs")
    values = {f"x{i}": [1.0, 0.0] for i in range(30)}
    a = eval_run(store, values)
    b = eval_run(store, values, {**EVAL_CONFIG, **change})
    with pytest.raises(RewardlabError, match=f"not run alike \\({named} .*--force"):
        compare_runs(store, a, b)
    forced = compare_runs(store, a, b, force=True)
    assert forced.reward.n == 30 and any("despite different settings" in w for w in forced.warnings)


# -- overlap by content ---------------------------------------------------------------------------------


def test_the_same_problem_under_another_system_prompt_is_found(tmp_path):
    from rewardlab.envs.builtin.arithmetic import load_environment as arithmetic
    from rewardlab.runs.overlap import record_training_data, training_data

    terse = arithmetic(level=2, num_train=500, num_eval=50)
    worded = arithmetic(level=2, num_train=500, num_eval=50, system_prompt="Think, then answer in tags.")
    record_training_data(tmp_path, ((e.prompt, e.answer) for e in terse.train_examples))
    trained = training_data([tmp_path])
    found = trained.check([(e.prompt, e.answer) for e in worded.train_examples])
    assert found.checked and found.exact == 500
    held_out = trained.check([(e.prompt, e.answer) for e in worded.eval_examples])
    assert held_out.exact == 0 and held_out.near == 0


def test_a_log_with_one_number_changed_is_a_near_duplicate(tmp_path):
    from rewardlab.envs.builtin.event_selection import load_environment as event_selection
    from rewardlab.runs.overlap import record_training_data, training_data

    env = event_selection(level=2, num_train=200, num_eval=20)
    record_training_data(tmp_path, ((e.prompt, e.answer) for e in env.train_examples))
    trained = training_data([tmp_path])
    original = env.train_examples[7]
    user = original.prompt[-1]["content"]
    first_duration = user.split("duration_s: ")[1].split(" ")[0]
    edited = [*original.prompt[:-1], {"role": "user", "content": user.replace(first_duration, "1234", 1)}]
    found = trained.check([(edited, original.answer), *[(e.prompt, e.answer) for e in env.eval_examples]])
    assert found.exact == 0 and found.near == 1  # the edited log; no held-out log is near any train log


def test_a_model_without_training_history_is_unchecked_not_zero(tmp_path):
    store = RunStore(tmp_path / "runs")
    values = {f"x{i}": [1.0, 0.0] for i in range(30)}
    config = {**EVAL_CONFIG, "model": {"name_or_path": "tiny"}}
    comparison = compare_runs(store, eval_run(store, values, config), eval_run(store, values, config))
    assert comparison.overlap_a is not None and not comparison.overlap_a.checked
    assert "unchecked" in comparison.overlap_a.describe("A")


def test_a_fresh_set_is_disjoint_from_the_held_out_set():
    from rewardlab.envs.builtin.arithmetic import load_environment as arithmetic
    from rewardlab.runs.overlap import content_hash

    env = arithmetic(level=2)  # a small held-out space: fresh draws used to repeat held-out problems
    held = {content_hash(e.prompt, e.answer) for e in env.eval_examples}
    fresh = env.fresh_examples(200, seed=0)
    assert len(fresh) == 200 and not held & {content_hash(e.prompt, e.answer) for e in fresh}


def test_the_same_question_with_another_answer_is_not_a_near_duplicate(tmp_path):
    """Wordle asks every example the same question: only the answer (the secret) tells them apart."""
    from rewardlab.runs.overlap import record_training_data, training_data

    question = [{"role": "user", "content": "Guess the secret five-letter word in at most six tries."}]
    record_training_data(tmp_path, [(question, word) for word in ("crane", "slate", "pious")])
    trained = training_data([tmp_path])
    assert trained.check([(question, "crane")]).exact == 1
    other = trained.check([(question, "ghost")])
    assert other.exact == 0 and other.near == 0


def test_asking_for_more_fresh_examples_than_exist_is_one_line():
    from rewardlab.envs.builtin.arithmetic import load_environment as arithmetic

    env = arithmetic(level=1, num_train=60, num_eval=6)  # 7 held-out-side problems, 6 of them held out
    message = user_error(env.fresh_examples, 6, 3)
    assert message == (
        "fewer than 6 fresh examples exist beside the 6 held-out ones at levels [1]; "
        "ask for fewer, or add a level"
    )
