"""The turn loop: the environment sees every model turn (the one at max_turns included), a turn cut off at
max_new_tokens is recorded for the rubric, and the token ids of multi-turn episodes stay consistent with the
chat template on the tiny model, without a warning."""

import warnings
from itertools import groupby

import pytest

from conftest import user_error
from rewardlab.config import EvalConfig
from rewardlab.envs import MultiTurnEnv, load_environment
from rewardlab.envs.builtin.maze import best_move
from rewardlab.envs.builtin.wordle import word_list
from rewardlab.eval.evaluate import evaluate
from rewardlab.models.chat import ChatRenderer
from rewardlab.models.tiny import build_tiny_tokenizer
from rewardlab.rubrics import Rubric, XMLParser
from rewardlab.sampling.base import Generation, SamplingParams
from rewardlab.sampling.local import LocalSampler


class GuessTheNumber(MultiTurnEnv):
    """Guess a number in 1..15; the environment says higher or lower and judges each guess in env_response."""

    def initial_state(self, example):
        return {"answer": example.answer, "low": 1, "high": 15, "solved": False, "done": False}

    def env_response(self, messages, state):
        guess = int(self.parser.parse_answer(messages[-1]["content"]))
        answer = int(state["answer"])
        if guess == answer:
            state["solved"] = state["done"] = True
            return [{"role": "user", "content": "right"}]
        return [{"role": "user", "content": "higher" if guess < answer else "lower"}]

    def is_completed(self, messages, state):
        return state["done"]

    def policies(self):
        def bisect(messages, state, example, rng):
            if messages[-1]["content"] == "higher":
                state["low"] = state["last"] + 1
            elif messages[-1]["content"] == "lower":
                state["high"] = state["last"] - 1
            state["last"] = (state["low"] + state["high"]) // 2
            return self.parser.format_answer(str(state["last"]))

        return {"bisect": bisect}


def solved(state):
    return 1.0 if state["solved"] else 0.0


def test_a_correct_last_guess_counts(tmp_path):
    """Bisection finds any of 15 numbers in at most 4 guesses; with max_turns=4 every episode is solved, the
    fourth guess included, so pass@1 is 1.0 (an unjudged last turn left those unsolved)."""
    parser = XMLParser()
    rows = [{"question": "guess", "answer": str(n)} for n in range(1, 16)]
    env = GuessTheNumber(
        dataset=rows, eval_dataset=rows, rubric=Rubric([solved], parser=parser), parser=parser, max_turns=4
    )
    config = EvalConfig.model_validate(
        {"model": {"name_or_path": "scripted:bisect"}, "runs_dir": str(tmp_path), "rollouts_per_example": 1}
    )
    result = evaluate(config, env=env)
    assert result.summary["pass@1"] == 1.0
    turns = sorted(s.rollout.num_turns for s in result.scored)
    assert turns.count(4) == 8  # half the numbers need the fourth guess
    assert {s.rollout.state["stop_reason"] for s in result.scored} == {"completed"}


class PolicySampler:
    """Replies with ``policy(messages, state, example)``; ``cut`` marks every reply as cut off."""

    def __init__(self, policy, cut: bool = False):
        self.policy, self.cut = policy, cut

    def generate(self, prompts, params):
        return [
            [
                Generation(
                    self.policy(p.messages, p.state, p.example),
                    finish_reason="length" if self.cut else "stop",
                )
            ]
            for p in prompts
        ]


def test_max_turns_is_answered_and_a_cut_off_turn_is_recorded():
    class Forever(MultiTurnEnv):
        def env_response(self, messages, state):
            state["seen"] = state.get("seen", 0) + 1
            return [{"role": "user", "content": "more"}]

        def is_completed(self, messages, state):
            return False

    env = Forever(dataset=[{"prompt": "go"}], max_turns=2)
    [rollout] = env.rollout(PolicySampler(lambda *_: "a"), env.examples("train"), SamplingParams())
    assert rollout.num_turns == 2 and rollout.state["seen"] == 2
    assert rollout.completion[-1] == {"role": "user", "content": "more"}
    assert rollout.state["stop_reason"] == "max_turns" and not rollout.state["truncated"]

    [rollout] = env.rollout(PolicySampler(lambda *_: "cu", cut=True), env.examples("train"), SamplingParams())
    assert rollout.truncated and rollout.num_turns == 1
    assert rollout.state == {"seen": 1, "truncated": True, "stop_reason": "truncated"}


def test_maze_and_wordle_judge_a_win_on_the_last_allowed_turn():
    maze = load_environment("maze", level=2, num_train=10, num_eval=8)

    def walk_late(messages, state, example):
        # Waste moves into the edge until the shortest path exactly fills what is left of the budget.
        if state["max_moves"] - state["moves"] > state["distance"]:
            return "<move>jump</move>"
        grid, goal = state["grid"], tuple(state["goal"])
        return f"<move>{best_move(grid, tuple(state['position']), goal)}</move>"

    scored = maze.rubric.score(
        maze.rollout(PolicySampler(walk_late), maze.examples("eval"), SamplingParams())
    )
    assert all(s.components["reached_goal"] == 1.0 for s in scored)
    assert all(s.rollout.state["moves"] == s.rollout.state["max_moves"] for s in scored)

    wordle = load_environment("wordle", level=3, num_train=10, num_eval=8)

    def guess_late(messages, state, example):
        if state["guesses"] + 1 < state["max_guesses"]:
            return f"<guess>{next(w for w in word_list() if w != example.answer)}</guess>"
        return f"<guess>{example.answer}</guess>"

    scored = wordle.rubric.score(
        wordle.rollout(PolicySampler(guess_late), wordle.examples("eval"), SamplingParams())
    )
    assert all(s.components["solved"] == 1.0 for s in scored)
    assert all(s.rollout.state["invalid_guesses"] == 0 for s in scored)


def test_tool_math_runs_a_tool_call_made_on_the_last_turn():
    env = load_environment("tool_math", level=1, num_train=4, num_eval=3, max_turns=2)
    always_calls = PolicySampler(lambda *_: '<tool name="calculator">6*7</tool>')
    rollouts = env.rollout(always_calls, env.examples("eval"), SamplingParams())
    for rollout in rollouts:
        assert rollout.state["tool_calls"] == 2 and rollout.state["stop_reason"] == "max_turns"
        assert rollout.completion[-1] == {"role": "tool", "content": "calculator result:\n42"}


def _visible_ids(rollout, tokenizer, stop_ids):
    """The episode's ids less the special tokens a model wrote inside its turns (text cannot carry them)."""
    special = set(tokenizer.all_special_ids)
    visible = list(rollout.prompt_ids)
    pairs = zip(rollout.completion_ids, rollout.completion_mask, strict=True)
    for from_model, group in groupby(pairs, key=lambda pair: pair[1]):
        segment = [token for token, _ in group]
        if from_model:
            ending = segment[-1:] if segment[-1] in stop_ids else []
            body = segment[:-1] if ending else segment
            segment = [token for token in body if token not in special] + ending
        visible.extend(segment)
    return visible


def test_multi_turn_ids_follow_the_template_on_the_untrained_tiny_model(tiny):
    """The untrained tiny model writes role and pad tokens mid-turn and runs out of tokens; neither makes the
    ids drift from the template, and neither warns."""
    model, tokenizer = tiny
    sampler = LocalSampler(model, tokenizer)
    env = load_environment("maze", level=1, num_train=10, num_eval=12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rollouts = env.rollout(sampler, env.examples("eval"), SamplingParams(n=4, max_new_tokens=16, seed=3))
    stop_ids = sampler.renderer.stop_token_ids
    special = set(tokenizer.all_special_ids)
    specials_mid_turn = sum(
        any(t in special for t in r.completion_ids[:-1]) and any(r.completion_mask) for r in rollouts
    )
    assert specials_mid_turn > 0  # the case that used to warn is exercised
    for rollout in rollouts:
        rendered = sampler.renderer.render([*rollout.example.prompt, *rollout.completion])
        decoded = tokenizer.decode(_visible_ids(rollout, tokenizer, stop_ids), skip_special_tokens=False)
        assert decoded == rendered


@pytest.mark.parametrize("cut", [False, True])
def test_continuation_closes_the_turn_once(tiny, cut):
    _, tokenizer = tiny
    from rewardlab.models.chat import ChatRenderer

    renderer = ChatRenderer(tokenizer)
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    generated = renderer.encode("y<|system|>o") + ([] if cut else [tokenizer.eos_token_id])
    delta = renderer.continuation_ids(history, generated, [*history, {"role": "user", "content": "ok"}])
    assert tokenizer.decode(delta, skip_special_tokens=False) == (
        ("<|end|>" if cut else "") + "<|user|>ok<|end|><|assistant|>"
    )


def test_a_conversation_the_template_cannot_take_is_one_line():
    renderer = ChatRenderer(build_tiny_tokenizer())
    assert user_error(renderer.prompt_ids, []) == (
        "a conversation must be a non-empty list of chat messages, got an empty list"
    )
    assert user_error(renderer.prompt_ids, None) == (
        "a conversation must be a non-empty list of chat messages, got NoneType"
    )
    assert user_error(renderer.prompt_ids, [None]) == (
        "chat message 0 must be an object with 'role' and 'content', got NoneType"
    )
    assert (
        user_error(renderer.prompt_ids, [{"role": "user"}])
        == "chat message 0: 'content' must be text, got nothing"
    )
    assert user_error(renderer.prompt_ids, [{"role": "user", "content": 3}]) == (
        "chat message 0: 'content' must be text, got int"
    )
    assert user_error(renderer.prompt_ids, [{"role": "user", "content": "a\ud800"}]) == (
        "chat message 0: 'content' holds '\\ud800' at position 1, a lone surrogate: not text "
        "(UTF-8 cannot encode it)"
    )
    assert user_error(renderer.encode, "\ud800").startswith("the text to tokenize holds '\\ud800'")
