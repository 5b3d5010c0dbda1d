"""Every built-in environment, played by its scripted oracle and random policies through the real rollout
path (``env.rollout`` with a ``ScriptedSampler``, then ``env.rubric.score``, as ``eval`` does), and the
promises each makes: it loads by name, its splits are disjoint, its generation is seeded, its levels change
difficulty, and bad input gets a score or a one-line error rather than a crash."""

import json
import statistics
from functools import cache

import pytest

from rewardlab.envs import list_environments, load_environment
from rewardlab.envs.builtin import event_selection, hypothesis
from rewardlab.errors import EnvironmentLoadError
from rewardlab.sampling.base import SamplingParams
from rewardlab.sampling.scripted import ScriptedSampler
from rewardlab.types import Rollout

# Small splits keep the file fast; tool_math's are smallest (its oracle calls the calculator per example).
SMALL = {
    "arithmetic": {"level": 2, "num_train": 60, "num_eval": 20},
    "maze": {"level": 1, "num_train": 20, "num_eval": 12},
    "wordle": {"level": 3, "num_train": 20, "num_eval": 12},
    "tool_math": {"level": 1, "num_train": 10, "num_eval": 6},
    "event_selection": {"level": 3, "num_train": 60, "num_eval": 20},
    "hypothesis": {"level": 3, "num_train": 60, "num_eval": 20},
}
BUILTINS = list(SMALL)


@cache
def small_env(name: str):
    return load_environment(name, **SMALL[name])


def mean_reward(env, policy: str, examples=None) -> float:
    sampler = ScriptedSampler(env, f"scripted:{policy}", seed=0)
    scored = env.rubric.score(env.rollout(sampler, examples or env.examples("eval"), SamplingParams(n=1)))
    assert not [s.errors for s in scored if s.errored]  # the rubric scores every rollout of a scripted player
    return statistics.fmean(s.reward for s in scored)


def max_reward(env) -> float:
    return sum(weight for weight in env.rubric.weights.values() if weight > 0)


def split_key(name: str):
    # A wordle prompt only states the guess budget and hints; what must not be shared is the secret word.
    return (lambda e: e.answer) if name == "wordle" else (lambda e: e.question)


def test_every_builtin_is_listed_with_a_description():
    listed = list_environments()
    for name in BUILTINS:
        assert listed[name], f"{name} has no description in `env list`"
        env = small_env(name)
        assert env.name == name and env.description


@pytest.mark.parametrize("name", BUILTINS)
def test_oracle_scores_near_the_maximum_and_far_above_random(name):
    env = small_env(name)
    best = max_reward(env)
    oracle, random_play = mean_reward(env, "oracle"), mean_reward(env, "random")
    assert oracle >= 0.95 * best, f"oracle {oracle:.3f} of {best:.3f}"
    assert random_play <= oracle - 0.25 * best, f"random {random_play:.3f} vs oracle {oracle:.3f}"


@pytest.mark.parametrize("name", BUILTINS)
def test_train_held_out_fresh_and_adversarial_never_overlap_train(name):
    env = small_env(name)
    key = split_key(name)
    train = {key(e) for e in env.train_examples}
    held_out = {key(e) for e in env.eval_examples}
    assert len(held_out) == len(env.eval_examples) and not train & held_out
    generated = env.adversarial_examples(3, seed=1)
    if name != "wordle":  # wordle generates no fresh words: its held-out split is the list's held-out side
        generated += env.fresh_examples(3, seed=1)
    assert not {key(e) for e in generated} & train


@pytest.mark.parametrize("name", BUILTINS)
def test_generation_is_reproducible_from_the_seed(name):
    env = small_env(name)
    again = load_environment(name, **SMALL[name])
    assert [e.id for e in again.eval_examples] == [e.id for e in env.eval_examples]
    assert [e.id for e in again.train_examples] == [e.id for e in env.train_examples]
    other = load_environment(name, **SMALL[name], seed=1)
    assert [e.id for e in other.train_examples] != [e.id for e in env.train_examples]
    if name != "wordle":
        assert [e.id for e in env.fresh_examples(4, seed=2)] == [
            e.id for e in again.fresh_examples(4, seed=2)
        ]


# (name, easy level, hard level, a measure that grows with difficulty)
DIFFICULTY = [
    ("arithmetic", 2, 3, lambda e: len(str(e.info["a"]))),  # level 1 has too few held-out problems
    ("maze", 1, 3, lambda e: e.info["optimal"]),
    ("wordle", 1, 4, lambda e: -(e.info["max_guesses"] + len(e.info["hints"]))),
    ("tool_math", 1, 3, lambda e: e.info["tool"] == "python"),
    ("event_selection", 1, 3, lambda e: e.info["num_events"] + e.info["num_decoys"] + e.info["num_traps"]),
    ("hypothesis", 1, 3, lambda e: e.info["num_pieces"] + e.info["num_distractors"]),
]


@pytest.mark.parametrize("name, easy, hard, measure", DIFFICULTY, ids=[d[0] for d in DIFFICULTY])
def test_higher_levels_are_measurably_harder(name, easy, hard, measure):
    def mean_measure(level):
        env = load_environment(name, level=level, num_train=0, num_eval=20)
        return statistics.fmean(float(measure(e)) for e in env.eval_examples)

    assert mean_measure(hard) > mean_measure(easy)


@pytest.mark.parametrize("name", BUILTINS)
def test_an_unknown_level_is_a_one_line_error(name):
    with pytest.raises(EnvironmentLoadError, match="unknown level 9") as error:
        load_environment(name, level=9)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "name, text",
    [
        ("event_selection", 'e03 and e07 {"selected_event_ids": ["e03"'),
        ("event_selection", "selected_event_ids: e03, e07"),
        ("hypothesis", "{'decision': 'VALIDATED', 'confidence': 0.9}"),  # Python, not JSON
        ("hypothesis", "VALIDATED"),
    ],
)
def test_an_answer_that_is_not_json_scores_zero_without_an_error(name, text):
    env = small_env(name)
    example = env.eval_examples[0]
    [scored] = env.rubric.score([Rollout(example, 0, [{"role": "assistant", "content": text}])])
    assert not scored.errored and scored.reward == 0.0
    assert set(scored.components.values()) == {0.0}


def test_json_of_the_wrong_shape_is_valid_but_earns_nothing_else():
    env = small_env("event_selection")
    example = env.eval_examples[0]
    reply = json.dumps({"selected_event_ids": ",".join(example.info["gold_ids"])})  # a string, not a list
    [scored] = env.rubric.score([Rollout(example, 0, [{"role": "assistant", "content": reply}])])
    assert scored.components["json_valid"] == 1.0 and scored.components["json_schema_match"] == 0.0
    assert scored.components["id_f1"] == 0.0 and not scored.errored


def test_event_rule_examples_from_its_documentation():
    def event(app="Slack", title="#general", duration=620, idle=581, switches=1):
        return {
            "app": app,
            "title": title,
            "duration_s": duration,
            "idle_s": idle,
            "context_switches": switches,
        }

    rule = event_selection.low_productivity
    assert rule(event())  # long idle: 581 s idle of 620
    assert not rule(event(duration=90, idle=5, switches=1))  # a short focus session, then a switch
    assert not rule(event(duration=3000, idle=420))  # idle, but under half the event
    assert not rule(event(duration=400, idle=250))  # mostly idle, but under 300 s
    assert rule(event(app="Chrome", title="Cats - YouTube", idle=0)) and not rule(
        event(app="Chrome", title="Cats - YouTube", duration=120, idle=0)
    )
    assert rule(event(idle=0, switches=10)) and not rule(event(idle=0, switches=9))
    assert not rule(event(app="Zoom", title="Weekly sync"))  # listening in a meeting shows as idle
    assert not rule(event(app="Terminal", title="cargo build (running)"))  # waiting on a build
    assert not rule(event(duration=300, idle=900)) and not rule(event(duration=-60, idle=400))  # fake


def test_event_selection_levels_add_decoys_then_traps_and_adversarial_fools_the_naive_reading():
    counts = {}
    for level in event_selection.LEVELS:
        env = load_environment("event_selection", level=level, num_train=0, num_eval=30)
        infos = [e.info for e in env.eval_examples]
        counts[level] = (sum(i["num_decoys"] for i in infos), sum(i["num_traps"] for i in infos))
        assert all(i["gold_ids"] for i in infos)
    assert counts[1] == (0, 0) and counts[2][0] > 0 == counts[2][1] and counts[3][1] > 0
    env = small_env("event_selection")
    adversarial = env.adversarial_examples(20, seed=0)
    assert mean_reward(env, "naive", adversarial) < mean_reward(env, "naive") < mean_reward(env, "oracle")


def test_event_selection_select_all_is_a_floor_above_random_with_full_recall():
    """Selecting every event earns F1 without reading anything, more than random picks do at level 1: a
    learning claim on this environment has to beat it, not random."""
    env = load_environment("event_selection", level=1, num_train=0, num_eval=60)

    def scored(policy):
        sampler = ScriptedSampler(env, f"scripted:{policy}", seed=0)
        return env.rubric.score(env.rollout(sampler, env.examples("eval"), SamplingParams(n=1)))

    selected_all = scored("all")
    assert all(s.components["id_recall"] == 1.0 for s in selected_all)
    assert all(s.components["id_precision"] < 1.0 for s in selected_all)  # some events are productive
    all_f1 = statistics.fmean(s.components["id_f1"] for s in selected_all)
    random_f1 = statistics.fmean(s.components["id_f1"] for s in scored("random"))
    assert random_f1 < all_f1 < 0.6


def test_hypothesis_rule_and_adversarial_set():
    assert hypothesis.decide(100, 50) == "VALIDATED" and hypothesis.decide(49, 100) == "REJECTED"
    assert hypothesis.decide(100, 60) == "REFINED"
    pieces = [
        {"stance": "supports", "relevance": 90},
        {"stance": "contradicts", "relevance": 20},  # below 0.3: ignored, however many there are
        {"stance": "contradicts", "relevance": 25},
    ]
    assert hypothesis.weights(pieces) == (90, 0) and hypothesis.count_decision(pieces) == "REJECTED"
    env = small_env("hypothesis")
    decisions = [e.info["decision"] for e in env.train_examples]
    assert set(decisions) == set(hypothesis.DECISIONS)
    for example in env.train_examples:
        support, against = hypothesis.weights(example.info["pieces"])
        assert hypothesis.decide(support, against) == json.loads(example.answer)["decision"]
    adversarial = env.adversarial_examples(20, seed=0)
    assert all(e.info["count_decision"] != e.info["decision"] for e in adversarial)
    assert mean_reward(env, "naive", adversarial) < 0.5 < mean_reward(env, "oracle", adversarial)


def test_asking_for_more_distinct_examples_than_exist_is_a_one_line_error():
    """A generator that runs out of new examples stops with the count it found, instead of looping forever."""
    from rewardlab.envs.builtin.splits import split_draws
    from rewardlab.errors import RewardlabError

    few = iter(range(10**6))

    def draw(level):
        return str(next(few) % 3), None  # only three distinct examples exist

    with pytest.raises(RewardlabError) as error:
        list(split_draws(50, [1, 2], "train", 0.01, draw, "puzzles"))
    message = str(error.value)
    assert message.startswith("only ") and "distinct train puzzles found for levels [1, 2]" in message
    assert "\n" not in message
