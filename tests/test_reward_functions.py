"""The reward library: format, length and DAPO overlong shaping, and math equivalence via math-verify."""

import builtins
import re

import pytest

from rewardlab.errors import RewardlabError
from rewardlab.rubrics import (
    Parser,
    Rubric,
    XMLParser,
    length_penalty,
    math_equivalence,
    overlong_shaping,
    regex_format,
)
from rewardlab.types import Example, Rollout


def rollout(text: str, tokens: int | None = None, answer: str = "") -> Rollout:
    example = Example("e1", [{"role": "user", "content": "q"}], answer)
    mask = None if tokens is None else [1] * tokens
    return Rollout(example, 0, [{"role": "assistant", "content": text}], completion_mask=mask)


def test_regex_format_matches_the_whole_reply():
    think_then_answer = regex_format(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
    assert think_then_answer("<think>2+2</think>\n<answer>4</answer>\n") == 1.0
    assert think_then_answer("chatter <think>a</think><answer>4</answer>") == 0.0  # not the whole reply
    assert think_then_answer("<answer>4</answer>") == 0.0
    anywhere = regex_format(r".*\d.*", re.DOTALL)
    assert anywhere("the answer\nis 4 surely") == 1.0
    with pytest.raises(RewardlabError, match="invalid pattern"):
        regex_format("(unclosed")


def test_length_penalty_in_chars_and_tokens():
    by_chars = length_penalty(max_chars=10)
    assert [by_chars([{"role": "assistant", "content": "x" * n}]) for n in (5, 10, 15, 20, 40)] == [
        0.0,
        0.0,
        -0.5,
        -1.0,
        -1.0,
    ]
    by_tokens = length_penalty(max_tokens=100)
    assert by_tokens(120) == pytest.approx(-0.2)
    with pytest.raises(ValueError, match="no token ids"):
        by_tokens(None)
    with pytest.raises(RewardlabError, match="exactly one"):
        length_penalty(max_tokens=10, max_chars=10)
    with pytest.raises(RewardlabError, match="positive integer"):
        length_penalty(max_chars=0)


def test_overlong_shaping_follows_dapo():
    shaping = overlong_shaping(max_length=100, buffer=20, per="episode")
    lengths = [0, 80, 85, 90, 100, 101, 500]
    assert [shaping(n) for n in lengths] == pytest.approx([0.0, 0.0, -0.25, -0.5, -1.0, -1.0, -1.0])
    per_turn = overlong_shaping(max_length=100, buffer=20)  # the default: the longest turn is measured
    assert [per_turn([n]) for n in lengths] == pytest.approx([0.0, 0.0, -0.25, -0.5, -1.0, -1.0, -1.0])
    assert per_turn([60, 60, 60]) == 0.0  # 180 tokens in three turns, none near the per-turn limit
    assert shaping(180) == -1.0  # ... which the episode-wide measure would punish fully
    with pytest.raises(RewardlabError, match="unknown per"):
        overlong_shaping(100, 10, per="step")
    with pytest.raises(RewardlabError, match="must not exceed"):
        overlong_shaping(max_length=10, buffer=20)
    with pytest.raises(RewardlabError, match="unknown unit"):
        overlong_shaping(100, 10, unit="words")


def test_length_rewards_read_the_rollout_through_the_rubric():
    rubric = Rubric(
        [overlong_shaping(10, 4), overlong_shaping(10, 4, unit="chars")], names=["tokens", "chars"], workers=2
    )
    with_ids, without_ids = rubric.score([rollout("x" * 3, tokens=8), rollout("x" * 9)])
    assert with_ids.components == {"tokens": pytest.approx(-0.5), "chars": 0.0}
    assert without_ids.components["chars"] == pytest.approx(-0.75)
    assert "no token ids" in without_ids.errors["tokens"]  # never a length in the wrong unit


def test_overlong_shaping_measures_each_turn_of_a_multi_turn_episode():
    """A limit on each turn (max_new_tokens) is checked against each turn, not the episode's sum."""
    example = Example("e1", [{"role": "user", "content": "q"}])
    turns = [{"role": "assistant", "content": "x" * 6}, {"role": "user", "content": "ok"}] * 2
    # two model turns of 6 tokens, environment tokens (mask 0) between them: 12 model tokens in all
    mask = [1] * 6 + [0] * 3 + [1] * 6
    episode = Rollout(example, 0, turns, completion_mask=mask)
    rubric = Rubric(
        [overlong_shaping(10, 4), overlong_shaping(10, 4, per="episode"), overlong_shaping(10, 4, "chars")],
        names=["turn", "episode", "turn_chars"],
        isolation="inline",
    )
    [scored] = rubric.score([episode])
    assert scored.components == {"turn": 0.0, "episode": -1.0, "turn_chars": 0.0}
    episode.turn_tokens = [6, 9]  # as the environment records them while sampling
    [scored] = rubric.score([episode])
    assert scored.components["turn"] == pytest.approx(-0.75)


@pytest.fixture(scope="module")
def equivalent():
    pytest.importorskip("math_verify")
    return math_equivalence()


@pytest.mark.parametrize(
    "reference, answer, expected",
    [
        ("\\frac{1}{2}", "0.5", 1.0),
        ("0.5", "\\frac{1}{2}", 1.0),
        ("1/2", "2/4", 1.0),
        ("3/4", "0.7", 0.0),
        ("\\{1, 2\\}", "\\{2, 1\\}", 1.0),
        ("\\{1, 2\\}", "\\{1, 3\\}", 0.0),
        ("[0, 1)", "[0, 1)", 1.0),
        ("[0, 1)", "(0, 1]", 0.0),
        ("\\sqrt{2}", "2^{1/2}", 1.0),
        ("42", "I don't know", 0.0),
        ("42", "", 0.0),
    ],
)
def test_math_equivalence_compares_math_not_strings(equivalent, reference, answer, expected):
    assert equivalent(f"<answer>{answer}</answer>", reference, XMLParser()) == expected


def test_math_equivalence_without_the_parser_reads_the_whole_reply():
    pytest.importorskip("math_verify")
    whole = math_equivalence(use_parser=False)
    assert whole("so the result is $\\boxed{\\frac{3}{6}}$", "0.5", Parser()) == 1.0
    assert whole("no idea", "0.5", Parser()) == 0.0


def test_an_unreadable_reference_is_an_error_not_a_zero(equivalent):
    with pytest.raises(ValueError, match="cannot read the reference"):
        equivalent("<answer>1</answer>", "", XMLParser())


def test_without_math_verify_creating_the_reward_says_which_extra_to_install(monkeypatch):
    real_import = builtins.__import__

    def no_math_verify(name, *args, **kwargs):
        if name == "math_verify" or name.startswith("math_verify."):
            raise ImportError("No module named 'math_verify'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_math_verify)
    with pytest.raises(RewardlabError) as error:
        math_equivalence()
    assert "pip install 'rewardlab[math]'" in str(error.value) and "\n" not in str(error.value)
