"""Wordle: find the secret five-letter word from per-letter feedback, guessing <guess>crane</guess>.

After each guess the environment shows the guess with one mark per letter: ``G`` right letter in the right
spot, ``Y`` in the word but elsewhere, ``-`` not in the word. Repeated letters follow the game's rules:
greens are marked first, then yellows from left to right, and a letter is marked (G or Y) at most as many
times as it occurs in the secret word: guessing ``eerie`` for ``level`` gives ``Y G - - -`` (one e is
green, the word's other e makes the first e yellow, and there is no third e for the last one).

A guess that cannot be read, is not five letters or is not in the word list gets a message saying so and
still uses up one guess: otherwise a policy could stall for free and the guess budget would mean nothing.

Words come from a list shipped with the package (``data/wordle_words.txt``); a word is a held-out answer
when a hash of it falls in ``eval_fraction``, so no held-out word is ever a training answer. Every word in
the list is an accepted guess in both splits (it is the dictionary, not the answers).

Levels: 1 = 8 guesses and two letters revealed, 2 = 6 guesses and one letter revealed, 3 = the standard 6
guesses, 4 = 4 guesses.
"""

from __future__ import annotations

import random
from collections import Counter
from functools import lru_cache
from importlib.resources import files
from typing import Any

from rewardlab.envs.base import MultiTurnEnv
from rewardlab.envs.builtin.splits import check_split_sizes, checked_levels, held_out
from rewardlab.envs.dataset import load_examples
from rewardlab.errors import RewardlabError
from rewardlab.rubrics.parsers import XMLParser
from rewardlab.rubrics.rubric import Rubric
from rewardlab.types import Example, Messages

LEVELS: dict[int, dict[str, int]] = {
    1: {"max_guesses": 8, "hints": 2},
    2: {"max_guesses": 6, "hints": 1},
    3: {"max_guesses": 6, "hints": 0},
    4: {"max_guesses": 4, "hints": 0},
}
SYSTEM_PROMPT = (
    "You are playing Wordle. Find the secret five-letter English word. Each turn, reply with one guess "
    "written as <guess>crane</guess>. After each guess you get one mark per letter: G = right letter in the "
    "right spot, Y = the letter is in the word but in another spot, - = the letter is not in the word (or "
    "not as many times as you used it). Guesses must be real five-letter words; an invalid guess still "
    "uses up a turn."
)
SOLVED = "GGGGG"


@lru_cache(maxsize=1)
def word_list() -> tuple[str, ...]:
    """The shipped words, sorted: answers and accepted guesses."""
    text = files("rewardlab.envs.builtin").joinpath("data/wordle_words.txt").read_text()
    words = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return tuple(sorted(set(words)))


def feedback(guess: str, answer: str) -> str:
    """Marks for ``guess`` against ``answer``: five characters of ``G``, ``Y`` and ``-``.

    Greens first, so a letter in the right spot is never spent on a yellow elsewhere; then yellows left
    to right, each using up one of the answer's not-yet-matched copies of that letter.
    """
    marks = ["-"] * len(answer)
    unmatched: Counter[str] = Counter()
    for i, (g, a) in enumerate(zip(guess, answer, strict=True)):
        if g == a:
            marks[i] = "G"
        else:
            unmatched[a] += 1
    for i, g in enumerate(guess):
        if marks[i] != "G" and unmatched[g] > 0:
            marks[i] = "Y"
            unmatched[g] -= 1
    return "".join(marks)


def show(guess: str, marks: str) -> str:
    return f"{guess}  {' '.join(marks)}"


def letter_score(marks: str) -> float:
    """Partial credit for one guess: greens count 1, yellows 1/2, out of 5."""
    return (marks.count("G") + 0.5 * marks.count("Y")) / len(marks)


def consistent(word: str, history: list[list[str]], hints: dict[int, str]) -> bool:
    """Whether ``word`` could be the answer given the feedback so far and the revealed letters."""
    if any(word[position] != letter for position, letter in hints.items()):
        return False
    return all(feedback(guess, word) == marks for guess, marks in history)


def split_words(split: str, eval_fraction: float) -> list[str]:
    return [w for w in word_list() if held_out(f"wordle:{w}", eval_fraction) == (split == "eval")]


def make_rows(words: list[str], levels: list[int], count: int | None, seed: int) -> list[dict[str, Any]]:
    """One example per (word, level), shuffled by ``seed``; revealed letters are drawn with ``seed`` too."""
    rng = random.Random(f"wordle:{seed}")
    pairs = [(word, level) for level in levels for word in words]
    rng.shuffle(pairs)
    if count is not None:
        if count > len(pairs):
            raise ValueError(
                f"only {len(pairs)} words x levels exist on this side of the split, asked for {count}"
            )
        pairs = pairs[:count]
    rows = []
    for word, level in pairs:
        spec = LEVELS[level]
        positions = sorted(rng.sample(range(5), spec["hints"]))
        hints = {str(p): word[p] for p in positions}  # string keys: info goes through JSON
        lines = [f"Guess the secret five-letter word. You have {spec['max_guesses']} guesses."]
        lines += [f"Hint: letter {int(p) + 1} is '{letter}'." for p, letter in hints.items()]
        rows.append(
            {
                "prompt": "\n".join(lines),
                "answer": word,
                "info": {"level": level, "max_guesses": spec["max_guesses"], "hints": hints},
            }
        )
    return rows


class WordleEnv(MultiTurnEnv):
    name = "wordle"
    description = "Guess a five-letter word from G/Y/- feedback; levels 1-4."
    max_new_tokens_by_style = {"terse": 16, "chat": 24}

    def __init__(self, levels: list[int], eval_fraction: float, **kwargs: Any):
        super().__init__(**kwargs)
        self.levels = levels
        self.eval_fraction = eval_fraction

    def initial_state(self, example: Example) -> dict[str, Any]:
        return {
            "answer": example.answer,
            "max_guesses": example.info["max_guesses"],
            "guesses": 0,  # turns used, invalid guesses included
            "history": [],  # [guess, marks] for every valid guess
            "turn_scores": [],  # letter_score per turn, 0 for an invalid guess
            "invalid_guesses": 0,
            "solved": False,
            "done": False,
        }

    def _check(self, text: str) -> tuple[str | None, str]:
        guess = self.parser.parse_answer(text)
        if guess is None:
            return None, "no <guess>...</guess> found"
        guess = guess.strip().lower()
        if len(guess) != 5 or not guess.isalpha():
            return None, f"'{guess[:20]}' is not five letters"
        if guess not in word_list():
            return None, f"'{guess}' is not in the word list"
        return guess, ""

    def is_completed(self, messages: Messages, state: dict[str, Any]) -> bool:
        return state["done"]

    def env_response(self, messages: Messages, state: dict[str, Any]) -> Messages:
        state["guesses"] += 1
        guess, problem = self._check(messages[-1]["content"])
        if guess is None:
            state["invalid_guesses"] += 1
            state["turn_scores"].append(0.0)
            reply = f"Invalid guess: {problem}. It counts as a guess."
        else:
            marks = feedback(guess, state["answer"])
            state["history"].append([guess, marks])
            state["turn_scores"].append(letter_score(marks))
            reply = show(guess, marks)
            if marks == SOLVED:
                state["solved"] = state["done"] = True
                return [{"role": "user", "content": f"{reply}\nSolved in {state['guesses']} guesses."}]
        left = state["max_guesses"] - state["guesses"]
        if left <= 0:
            state["done"] = True
            return [{"role": "user", "content": f"{reply}\nOut of guesses. The word was {state['answer']}."}]
        return [{"role": "user", "content": f"{reply}\n{left} guesses left."}]

    def adversarial_examples(self, n: int, seed: int) -> list[Example]:
        """Held-out words that are hard to pin down: a repeated letter, or at least two list words that
        differ from it in one letter (might / night / right...), at the hardest configured level."""
        words = word_list()

        def hard(word: str) -> bool:
            neighbours = sum(sum(a != b for a, b in zip(word, other, strict=True)) == 1 for other in words)
            return len(set(word)) < 5 or neighbours >= 2

        candidates = [w for w in split_words("eval", self.eval_fraction) if hard(w)]
        if n > len(candidates):
            raise RewardlabError(
                f"only {len(candidates)} adversarial held-out words exist; ask for at most that many"
            )
        return load_examples(make_rows(candidates, [max(self.levels)], n, seed + 20_000), self.system_prompt)

    def policies(self):
        """``oracle`` knows the answer (read from the example) and guesses it first: it bounds the rubric,
        it does not play. ``solver`` plays fair: a random word consistent with every mark so far and the
        revealed letters. ``random`` guesses a random list word every turn."""

        def oracle(messages, state, example, rng):
            return self.parser.format_answer(example.answer)

        def solver(messages, state, example, rng):
            hints = {int(p): letter for p, letter in example.info["hints"].items()}
            candidates = [w for w in word_list() if consistent(w, state["history"], hints)]
            return self.parser.format_answer(rng.choice(candidates or list(word_list())))

        def random_guess(messages, state, example, rng):
            return self.parser.format_answer(rng.choice(word_list()))

        return {"oracle": oracle, "solver": solver, "random": random_guess}


# -- rewards -----------------------------------------------------------------------------------------------


def solved(state: dict[str, Any]) -> float:
    return 1.0 if state.get("solved") else 0.0


def fewer_guesses(state: dict[str, Any]) -> float:
    """For a solved game, 1 when solved at the first guess down to 0 at the last allowed one; 0 unsolved."""
    if not state.get("solved"):
        return 0.0
    budget = state["max_guesses"]
    return (budget - state["guesses"]) / (budget - 1) if budget > 1 else 1.0


def letter_credit(state: dict[str, Any]) -> float:
    """Mean per-guess partial credit (greens 1, yellows 1/2, out of 5; an invalid guess 0): a dense signal
    while ``solved`` is still rare."""
    scores = state.get("turn_scores") or []
    return sum(scores) / len(scores) if scores else 0.0


def invalid_guesses(state: dict[str, Any]) -> float:
    return float(state.get("invalid_guesses", 0))


def load_environment(
    level: int | list[int] = 3,
    num_train: int | None = None,
    num_eval: int | None = None,
    seed: int = 0,
    eval_fraction: float = 0.15,
    speed_weight: float = 0.2,
    letter_weight: float = 0.1,
    system_prompt: str | None = SYSTEM_PROMPT,
    prompt_style: str = "terse",
) -> WordleEnv:
    """Wordle at ``level`` (an int or a list for a mix). ``num_train``/``num_eval`` default to every word of
    the split at every level. Rubric: ``solved`` (1) + ``fewer_guesses`` (``speed_weight``) +
    ``letter_credit`` (``letter_weight``); ``invalid_guesses`` is a weight-0 measurement."""
    levels = checked_levels(level, LEVELS)
    check_split_sizes(num_train, num_eval, eval_fraction)
    if speed_weight < 0 or letter_weight < 0:
        raise ValueError("speed_weight and letter_weight must be >= 0")
    parser = XMLParser(answer_tag="guess")
    rubric = Rubric(
        [solved, fewer_guesses, letter_credit, invalid_guesses],
        weights=[1.0, speed_weight, letter_weight, 0.0],
        parser=parser,
    )
    return WordleEnv(
        levels=levels,
        eval_fraction=eval_fraction,
        dataset=make_rows(split_words("train", eval_fraction), levels, num_train, seed),
        eval_dataset=make_rows(split_words("eval", eval_fraction), levels, num_eval, seed),
        system_prompt=system_prompt,
        rubric=rubric,
        parser=parser,
        # The budget of each game is enforced in env_response (the last guess is marked, then it ends).
        max_turns=max(LEVELS[lv]["max_guesses"] for lv in levels),
        prompt_style=prompt_style,
    )
