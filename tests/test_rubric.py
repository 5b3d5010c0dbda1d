import asyncio

import pytest

from rewardlab.errors import RewardlabError
from rewardlab.rubrics import Rubric, XMLParser
from rewardlab.rubrics.rewards import exact_answer, numeric_answer
from rewardlab.types import Example, Rollout


def rollout(text: str, answer: str = "4", info=None) -> Rollout:
    example = Example("e1", [{"role": "user", "content": "2+2="}], answer, info or {})
    return Rollout(example, 0, [{"role": "assistant", "content": text}], state={"turns": 1})


def test_weighted_total_and_components():
    parser = XMLParser()
    rubric = Rubric([exact_answer, parser.format_reward_func()], weights=[1.0, 0.25], parser=parser)
    [scored] = rubric.score([rollout("<answer>4</answer>")])
    assert scored.components == {"exact_answer": 1.0, "format_reward": 1.0}
    assert scored.reward == pytest.approx(1.25)
    [wrong] = rubric.score([rollout("<answer>5</answer> extra")])
    assert wrong.components == {"exact_answer": 0.0, "format_reward": 0.5}
    assert wrong.reward == pytest.approx(0.125)


def test_functions_receive_only_what_they_name():
    seen = {}

    def needs_info_and_state(info, state, prompt):
        seen.update(info=info, state=state, prompt=prompt)
        return 0.5

    def everything(**kwargs):
        seen["all"] = sorted(kwargs)
        return 1.0

    # inline: these functions record what they receive in this process (a worker would write its own copy)
    rubric = Rubric([needs_info_and_state, everything], isolation="inline")
    [scored] = rubric.score([rollout("x", info={"k": 1})])
    assert seen["info"] == {"k": 1} and seen["state"] == {"turns": 1}
    assert seen["prompt"][0]["content"] == "2+2="
    assert "completion" in seen["all"] and "parser" in seen["all"]
    assert scored.reward == 1.5


def test_async_functions_run_concurrently():
    """Each call waits for all four to have started: run one after another, the first would time out."""
    started = 0
    everyone_in = asyncio.Event()

    async def waits_for_the_others(completion):
        nonlocal started
        started += 1
        if started == 4:
            everyone_in.set()
        await asyncio.wait_for(everyone_in.wait(), timeout=5)
        return 1.0

    scored = Rubric([waits_for_the_others]).score([rollout("a"), rollout("b"), rollout("c"), rollout("d")])
    assert [s.reward for s in scored] == [1.0] * 4 and not any(s.errors for s in scored)


def test_raising_function_is_an_error_not_a_zero():
    def broken(completion):
        raise ValueError("cannot parse")

    def fine(completion):
        return 1.0

    [scored] = Rubric([broken, fine]).score([rollout("x")])
    assert scored.components["broken"] is None
    assert scored.errors == {"broken": "ValueError: cannot parse"}
    assert scored.errored
    assert scored.reward == 1.0  # the total is over the components that ran


def test_non_numeric_return_is_an_error():
    [scored] = Rubric([lambda completion: "yes"], names=["says_yes"]).score([rollout("x")])
    assert "expected a number" in scored.errors["says_yes"]


def test_unknown_argument_is_rejected_with_one_line():
    def bad(completion, gold):
        return 1.0

    with pytest.raises(RewardlabError) as error:
        Rubric([bad])
    assert "unknown argument 'gold'" in str(error.value) and "\n" not in str(error.value)


def test_duplicate_names_and_weight_count():
    with pytest.raises(RewardlabError):
        Rubric([exact_answer, exact_answer])
    with pytest.raises(RewardlabError):
        Rubric([exact_answer], weights=[1.0, 2.0])


def test_numeric_answer_tolerance():
    parser = XMLParser()
    assert numeric_answer("<answer>3.14159</answer>", "3.1416", parser, tolerance=1e-3) == 1.0
    assert numeric_answer("<answer>1,000</answer>", "1000", parser) == 1.0
    assert numeric_answer("<answer>abc</answer>", "1000", parser) == 0.0


def test_a_row_without_a_usable_answer_errors_the_component_instead_of_scoring_zero():
    """A dataset row missing its answer (or with a non-numeric one for a numeric check) is a data bug."""
    parser = XMLParser()
    functions = [exact_answer, numeric_answer, parser.format_reward_func()]
    rubric = Rubric(functions, parser=parser, isolation="inline")
    reply = "<answer>4</answer>"
    no_answer, not_a_number = rubric.score([rollout(reply, answer=""), rollout(reply, answer="four")])
    assert no_answer.errors["exact_answer"] == "ValueError: this row has no reference answer"
    assert no_answer.components["format_reward"] == 1.0 and no_answer.errored
    assert "reference answer 'four' is not a number" in not_a_number.errors["numeric_answer"]
    assert not_a_number.components["exact_answer"] == 0.0


def test_primary_defaults_to_first_function():
    assert Rubric([exact_answer, lambda completion: 0.0]).primary == "exact_answer"
    assert Rubric([exact_answer], primary="x").primary == "x"
