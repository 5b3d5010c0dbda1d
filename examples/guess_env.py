"""A complete multi-turn environment in one file: guess a secret number, told "higher" or "lower" each turn.

    rewardlab eval  --env examples/guess_env.py --model scripted:bisect -n 20 -r 1   # near the maximum
    rewardlab eval  --env examples/guess_env.py --model scripted:random -n 20 -r 1   # far below it
    rewardlab sft   --env examples/guess_env.py --set max_steps=300
    rewardlab train --env examples/guess_env.py --model runs/<sft-run-id>

The three methods a multi-turn environment has (docs/environments.md, "Write your own multi-turn
environment"): ``initial_state`` sets up an episode, ``env_response`` answers a turn and updates the
state, ``is_completed`` says when it is over. Reward functions read the final ``state``.
"""

import random

from rewardlab.envs import MultiTurnEnv
from rewardlab.rubrics import Rubric, XMLParser


class GuessEnv(MultiTurnEnv):
    name = "guess"
    description = "Guess a secret number from higher/lower hints, one <guess> per turn."

    def initial_state(self, example):
        # Everything the episode needs that the prompt does not say; each episode gets its own dict.
        return {
            "secret": int(example.answer),
            "low": 1,  # the range the hints so far leave open
            "high": example.info["high"],
            "guesses": 0,
            "solved": False,
        }

    def env_response(self, messages, state):
        state["guesses"] += 1
        guess = self.parser.parse_answer(messages[-1]["content"])
        if guess is None or not guess.strip().isdigit():
            return [{"role": "user", "content": "Answer with <guess>a number</guess>."}]
        guess = int(guess)
        if guess == state["secret"]:
            state["solved"] = True
            return [{"role": "user", "content": "Right."}]
        if guess < state["secret"]:
            state["low"] = max(state["low"], guess + 1)
            return [{"role": "user", "content": "Higher."}]
        state["high"] = min(state["high"], guess - 1)
        return [{"role": "user", "content": "Lower."}]

    def is_completed(self, messages, state):
        return state["solved"]  # running out of turns (max_turns) ends it too

    def policies(self):
        """Scripted players: ``bisect`` halves the range the hints leave open (always within 6 guesses for
        numbers up to 40), ``random`` guesses anything in the original range."""

        def bisect(messages, state, example, rng):
            return f"<guess>{(state['low'] + state['high']) // 2}</guess>"

        def guess_anything(messages, state, example, rng):
            return f"<guess>{rng.randint(1, example.info['high'])}</guess>"

        return {"bisect": bisect, "random": guess_anything}


def solved(state) -> float:
    return 1.0 if state["solved"] else 0.0


def fewer_guesses(state) -> float:
    """A bonus for solving quickly: 1 at the first guess, down to 0 at the sixth."""
    return max(0.0, 1 - (state["guesses"] - 1) / 5) if state["solved"] else 0.0


def load_environment(num_eval: int = 50, seed: int = 0, max_turns: int = 6) -> GuessEnv:
    rows = [
        {"question": f"Guess my number from 1 to {high}.", "answer": str(secret), "info": {"high": high}}
        for high in range(8, 41)
        for secret in range(1, high + 1)
    ]
    random.Random(seed).shuffle(rows)  # held out: the last num_eval (range, secret) pairs, never trained on
    parser = XMLParser(answer_tag="guess")
    return GuessEnv(
        dataset=rows[:-num_eval],
        eval_dataset=rows[-num_eval:],
        parser=parser,
        rubric=Rubric([solved, fewer_guesses], weights=[1.0, 0.2], parser=parser),
        max_turns=max_turns,
    )
