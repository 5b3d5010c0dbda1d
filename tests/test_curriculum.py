"""The curriculum: promotion at the threshold, review prompts, the fixed schedule, level-less environments,
exact resume on a real tiny run, and mode off drawing what the trainer always drew."""

import pytest

from conftest import user_error
from rewardlab.config import TrainConfig
from rewardlab.config.sections import CurriculumConfig
from rewardlab.data.curriculum import Curriculum
from rewardlab.envs import SingleTurnEnv
from rewardlab.rubrics import Rubric
from rewardlab.runs import RunStore
from rewardlab.train.trainer import examples_for_step, train
from rewardlab.types import Example, Rollout, ScoredRollout
from test_train import digit_fraction, easy_config

LEVELS = (1, 2, 3)


def pool(per_level: int = 10) -> list[Example]:
    """Levels interleaved, as the built-in environments generate them."""
    return [
        Example(f"l{level}-{i}", [{"role": "user", "content": f"{level}:{i}"}], info={"level": level})
        for i in range(per_level)
        for level in LEVELS
    ]


def curriculum(per_step: int = 8, max_steps: int = 30, **settings) -> Curriculum:
    config = CurriculumConfig(**{"mode": "adaptive", "window": 3, **settings})
    return Curriculum(config, pool(), "levels", per_step, seed=0, max_steps=max_steps, primary="correct")


def scored(examples: list[Example], pass_rate: float, group: int = 4) -> list[ScoredRollout]:
    """``group`` rollouts per example; on each level, the first ``pass_rate`` of its rollouts pass."""
    rollouts = [Rollout(example=e, sample_index=i, completion=[]) for e in examples for i in range(group)]
    out = []
    for level in LEVELS:
        own = [r for r in rollouts if r.example.info["level"] == level]
        passing = round(pass_rate * len(own))
        out += [
            ScoredRollout(r, reward=float(n < passing), components={"correct": float(n < passing)})
            for n, r in enumerate(own)
        ]
    return out


def run_steps(cur: Curriculum, rates: list[float], first: int = 1) -> list[list[Example]]:
    drawn = []
    for step, rate in enumerate(rates, start=first):
        examples = cur.examples_for_step(step)
        drawn.append(examples)
        cur.observe(step, scored(examples, rate))
    return drawn


def levels_of(examples: list[Example]) -> list[int]:
    return [e.info["level"] for e in examples]


def test_promotes_once_a_full_window_reaches_promote_at():
    cur = curriculum(promote_at=0.8)
    run_steps(cur, [1.0, 1.0])  # a perfect start, but the window (3 steps) is not full yet
    assert cur.level == 1 and cur.promotions == []
    run_steps(cur, [0.5], first=3)  # window: 1.0, 1.0, 0.5 -> 0.83
    assert cur.level == 2
    assert cur.promotions == [{"step": 3, "from": 1, "to": 2, "pass_rate": pytest.approx(2.5 / 3)}]
    run_steps(cur, [0.75, 0.75, 0.75, 0.875], first=4)  # 0.75 thrice: below; then 0.75, 0.75, 0.875
    assert cur.level == 2  # 0.79 < 0.8
    run_steps(cur, [0.875], first=8)  # 0.75, 0.875, 0.875 -> 0.83
    assert cur.level == 3 and [p["step"] for p in cur.promotions] == [3, 8]
    run_steps(cur, [1.0] * 4, first=9)  # the last level: nowhere to go
    assert cur.level == 3 and len(cur.promotions) == 2


def test_pass_rate_counts_only_the_current_levels_rollouts_and_errors_fail():
    cur = curriculum(window=1, promote_at=0.8)
    run_steps(cur, [1.0])
    examples = cur.examples_for_step(2)  # level 2, with 2 review prompts from level 1
    results = scored(examples, 0.0)
    for item in results:
        level = item.rollout.example.info["level"]
        item.components["correct"] = 1.0 if level == 1 else item.components["correct"]
    metrics = cur.observe(2, results)
    assert metrics["pass/level_1"] == 1.0 and metrics["pass/level_2"] == 0.0
    assert metrics["curriculum/level"] == 2 and cur.level == 2  # level 1's passes do not promote level 2

    errored = scored(cur.examples_for_step(3), 1.0)
    for item in errored:
        item.components["correct"] = None
        item.errors["correct"] = "boom"
    metrics = cur.observe(3, errored)
    assert metrics["pass/level_2"] == 0.0 and "reward/level_2" not in metrics and cur.level == 2


def test_review_share_draws_from_levels_already_passed():
    cur = curriculum(per_step=8, window=1, review_share=0.25)
    assert levels_of(cur.examples_for_step(1)) == [1] * 8  # nothing to review yet
    cur.observe(1, scored(cur.examples_for_step(1), 1.0))  # promote to 2 (window 1)
    second = cur.examples_for_step(2)
    assert levels_of(second) == [2] * 6 + [1] * 2
    cur.observe(2, scored(second, 1.0))
    assert cur.level == 3
    reviewed = []
    for step in range(4, 24):
        drawn = levels_of(cur.examples_for_step(step))
        assert drawn[:6] == [3] * 6
        reviewed += drawn[6:]
    assert set(reviewed) == {1, 2}  # both easier levels come back, drawn at random
    assert 10 <= reviewed.count(1) <= 30

    none = curriculum(per_step=8, window=1, review_share=0.0)
    none.observe(1, scored(none.examples_for_step(1), 1.0))
    assert levels_of(none.examples_for_step(2)) == [2] * 8


def test_each_level_is_drawn_as_seeded_epochs_like_the_plain_order():
    cur = curriculum(per_step=4)
    drawn = [e.id for step in (1, 2, 3, 4, 5) for e in cur.examples_for_step(step)]
    level_one = [e.id for e in pool() if e.info["level"] == 1]
    first_epoch, second_epoch = drawn[:10], drawn[10:20]
    assert sorted(first_epoch) == sorted(second_epoch) == sorted(level_one)  # each once per epoch
    assert first_epoch != level_one and second_epoch != first_epoch  # shuffled, afresh each epoch
    again = curriculum(per_step=4)
    assert [e.id for step in (1, 2, 3, 4, 5) for e in again.examples_for_step(step)] == drawn
    other_seed = Curriculum(CurriculumConfig(mode="adaptive"), pool(), "levels", 4, 1, 30, "correct")
    assert [e.id for step in (1, 2, 3) for e in other_seed.examples_for_step(step)] != drawn[:12]


def test_fixed_mode_walks_the_levels_in_order_whatever_the_pass_rate():
    equal = curriculum(mode="fixed", per_step=4, max_steps=6, review_share=0.0)
    drawn = run_steps(equal, [0.0] * 6)
    assert [levels_of(examples)[0] for examples in drawn] == [1, 1, 2, 2, 3, 3]
    assert [(p["step"], p["from"], p["to"]) for p in equal.promotions] == [(2, 1, 2), (4, 2, 3)]

    one_each = curriculum(mode="fixed", per_step=4, max_steps=6, steps_per_level=1, review_share=0.0)
    drawn = run_steps(one_each, [1.0] * 6)
    assert [levels_of(examples)[0] for examples in drawn] == [1, 2, 3, 3, 3, 3]


def test_state_round_trips_and_draws_the_same_next_step():
    cur = curriculum(per_step=8, window=1)
    run_steps(cur, [1.0, 0.2, 0.9])
    copy = curriculum(per_step=8, window=1)
    copy.load_state(cur.state())
    assert [e.id for e in copy.examples_for_step(4)] == [e.id for e in cur.examples_for_step(4)]
    assert copy.promotions == cur.promotions and copy.level == cur.level


def levelled_env(with_levels: bool = True) -> SingleTurnEnv:
    rows = [
        {"prompt": f"say something {i}", "answer": "", "info": {"level": 1 + i % 3} if with_levels else {}}
        for i in range(36)
    ]
    return SingleTurnEnv(dataset=rows, eval_dataset=rows[:6], rubric=Rubric([digit_fraction]))


def tiny_config(tmp_path, changes: dict | None = None, **overrides) -> TrainConfig:
    """test_train's small run: 3 steps of 4 groups of 4, a checkpoint every step, every rollout stored."""
    values = {"max_steps": 3, "group_size": 4, "log_rollouts_per_step": 16, "checkpoint_every": 1}
    return easy_config(tmp_path, **{**values, **(changes or {}), **overrides})


def test_an_environment_without_levels_is_one_line_naming_it_and_the_field(tmp_path):
    config = tiny_config(tmp_path, curriculum={"mode": "adaptive"})
    env = levelled_env(with_levels=False)
    store = RunStore(tmp_path / "runs")
    message = user_error(lambda: train(config, store, env=env))
    assert "info['level']" in message and f"environment '{env.name}'" in message
    assert "curriculum.mode" in message
    assert store.list() == []  # refused before any run (or model) was made


def prompts_by_step(store, run_id) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for row in store.rollouts(run_id, phase="train"):
        out.setdefault(row["step"], []).append(row["example_id"])
    return out


def test_resume_draws_the_same_prompts_and_promotes_at_the_same_steps(tmp_path):
    # A rollout passes when it writes any digit (about half do); one step at 0.4 promotes. Stopped after
    # step 1 and resumed from its checkpoint, the run decides its promotions after the resume.
    settings = {"mode": "adaptive", "window": 1, "promote_at": 0.4, "pass_threshold": 0.01}
    common = {"curriculum": settings}
    store = RunStore(tmp_path / "runs")
    whole = train(tiny_config(tmp_path, **common), store, env=levelled_env())
    interrupted = train(tiny_config(tmp_path, **common), store, env=levelled_env(), stop_after_step=1)
    resumed = train(tiny_config(tmp_path, **common, resume=interrupted.run_id), store, env=levelled_env())
    assert resumed.run_id == interrupted.run_id
    promotions = store.get(whole.run_id).summary["curriculum"]
    assert promotions, "the run should promote at least once for this test to mean anything"
    assert store.get(resumed.run_id).summary["curriculum"] == promotions
    assert prompts_by_step(store, resumed.run_id) == prompts_by_step(store, whole.run_id)
    wanted, got = store.metrics(whole.run_id), store.metrics(resumed.run_id)
    for name in [n for n in wanted if n.startswith(("curriculum/", "pass/level_", "reward/level_"))]:
        assert [step for step, _ in got[name]] == [step for step, _ in wanted[name]], name
        assert [v for _, v in got[name]] == pytest.approx([v for _, v in wanted[name]], rel=1e-5), name
    assert wanted["curriculum/level"][0] == (1, 1.0)

    # Resumed with the other mode: refused in one line, before the run is touched.
    other = {"curriculum": {**settings, "mode": "fixed"}, "resume": resumed.run_id, "max_steps": 4}
    message = user_error(lambda: train(tiny_config(tmp_path, **other), store, env=levelled_env()))
    assert "curriculum.mode = 'adaptive'" in message
    assert store.get(resumed.run_id).status == "completed"


def test_mode_off_draws_exactly_the_plain_shuffled_order(tmp_path):
    store = RunStore(tmp_path / "runs")
    config = tiny_config(tmp_path, max_steps=2)
    assert config.curriculum.mode == "off"
    env = levelled_env()
    result = train(config, store, env=env)
    pool_examples = env.examples("train")
    expected = {
        step: [e.id for e in examples_for_step(pool_examples, step, 4, 0) for _ in range(4)]
        for step in (1, 2)
    }
    assert prompts_by_step(store, result.run_id) == expected
    assert not [name for name in store.metrics(result.run_id) if name.startswith(("curriculum/", "pass/"))]
    assert "curriculum" not in store.get(result.run_id).summary

    # A run trained without a curriculum cannot take one up on resume: it has no history to go on from.
    later = tiny_config(tmp_path, max_steps=3, resume=result.run_id, curriculum={"mode": "adaptive"})
    message = user_error(lambda: train(later, store, env=env))
    assert "without a curriculum" in message and "curriculum.mode = 'off'" in message
    assert store.get(result.run_id).status == "completed"


def test_config_checks_the_curriculum_fields(tmp_path):
    message = user_error(tiny_config, tmp_path, {"curriculum": {"mode": "sometimes"}})
    assert "'curriculum.mode'" in message and "'adaptive'" in message
    message = user_error(tiny_config, tmp_path, {"curriculum": {"review_share": 1}})
    assert "'curriculum.review_share'" in message
