"""Reward functions about the shape of a completion: a format it must match, a length it must keep.

Each factory returns a plain function that names the arguments it needs, ready for a :class:`Rubric`.
Lengths count what the model wrote: tokens from ``completion_tokens`` (every model-generated token of the
episode, which the rubric reads from the rollout's token ids) or ``turn_tokens`` (the same, turn by turn),
or characters of assistant messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

from rewardlab.errors import RewardlabError
from rewardlab.types import Messages

LengthUnit = Literal["tokens", "chars"]


def regex_format(pattern: str, flags: int = 0) -> Callable[[str], float]:
    """1.0 when the whole completion, surrounding whitespace stripped, matches ``pattern``; else 0.0.

    A full match, not a search: a format reward should describe the entire reply, otherwise one matching
    line inside a wall of text earns it. To reward a pattern anywhere, write ``.*pattern.*`` and pass
    ``re.DOTALL``.
    """
    try:
        compiled = re.compile(pattern, flags)
    except (re.error, TypeError, ValueError) as error:
        raise RewardlabError(f"regex_format: invalid pattern {pattern!r}: {error}") from error

    def regex_format(completion: str) -> float:
        return 1.0 if compiled.fullmatch(completion.strip()) else 0.0

    return regex_format


def _chars(completion_messages: Messages) -> int:
    return sum(len(m.get("content") or "") for m in completion_messages if m.get("role") == "assistant")


def _tokens(completion_tokens: int | None) -> int:
    if completion_tokens is None:
        # an error, not a guess: scoring a length in the wrong unit would shape training silently
        raise ValueError("the sampler reported no token ids; measure the length in chars instead")
    return completion_tokens


def _turn_tokens(turn_tokens: list[int] | None) -> int:
    if turn_tokens is None:
        raise ValueError("the sampler reported no token ids; measure the length in chars instead")
    return max(turn_tokens, default=0)


def _turn_chars(completion_messages: Messages) -> int:
    return max(
        (len(m.get("content") or "") for m in completion_messages if m.get("role") == "assistant"), default=0
    )


LengthScope = Literal["episode", "turn"]


def _length_reward(
    unit: LengthUnit, shape: Callable[[int], float], name: str, per: LengthScope = "episode"
) -> Callable[..., float]:
    """A reward function of one length: the whole episode's (every model turn together) or the longest
    model turn's, in tokens or characters."""
    if per not in ("episode", "turn"):
        raise RewardlabError(f"{name}: unknown per '{per}' (choose: episode, turn)")
    if unit == "tokens" and per == "episode":

        def by_tokens(completion_tokens: int | None) -> float:
            return shape(_tokens(completion_tokens))

        function = by_tokens
    elif unit == "tokens":

        def by_turn_tokens(turn_tokens: list[int] | None) -> float:
            return shape(_turn_tokens(turn_tokens))

        function = by_turn_tokens
    elif unit == "chars":

        def by_chars(completion_messages: Messages) -> float:
            return shape((_chars if per == "episode" else _turn_chars)(completion_messages))

        function = by_chars
    else:
        raise RewardlabError(f"{name}: unknown unit '{unit}' (choose: tokens, chars)")
    function.__name__ = function.__qualname__ = name
    return function


def _positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RewardlabError(f"{what} must be a positive integer, got {value!r}")
    return value


def length_penalty(max_tokens: int | None = None, max_chars: int | None = None) -> Callable[..., float]:
    """0.0 up to the limit, then ``-(length - limit) / limit``: -0.5 at one and a half times the limit,
    -1.0 at twice the limit and beyond. Give exactly one of ``max_tokens`` and ``max_chars``.

    Give it a small weight next to correctness: it should break ties between right answers, not make a
    short wrong answer worth more than a long right one.
    """
    if (max_tokens is None) == (max_chars is None):
        raise RewardlabError("length_penalty takes exactly one of max_tokens and max_chars")
    unit: LengthUnit = "tokens" if max_tokens is not None else "chars"
    limit = _positive_int(max_tokens if max_tokens is not None else max_chars, f"length_penalty max_{unit}")

    def shape(length: int) -> float:
        return -min(1.0, max(0, length - limit) / limit)

    return _length_reward(unit, shape, "length_penalty")


def overlong_shaping(
    max_length: int, buffer: int, unit: LengthUnit = "tokens", per: LengthScope = "turn"
) -> Callable[..., float]:
    """DAPO's soft overlong punishment: 0.0 up to ``max_length - buffer``, then linear down to -1.0 at
    ``max_length``, and -1.0 beyond.

    ``max_length`` is the generation limit, so a reply cut off there scores -1; the buffer warns the
    policy before it gets there. The limit a sampler enforces (``max_new_tokens``) holds for each model
    turn, so by default (``per="turn"``) the length measured is the longest model turn's: a five-turn
    episode of short moves is not punished for adding up to the limit. ``per="episode"`` measures every
    model turn together, for a limit on the whole episode. ``unit="tokens"`` (the default) needs token
    ids from the sampler (local models have them); ``unit="chars"`` counts the characters of assistant
    messages.
    """
    max_length = _positive_int(max_length, "overlong_shaping max_length")
    buffer = _positive_int(buffer, "overlong_shaping buffer")
    if buffer > max_length:
        raise RewardlabError(f"overlong_shaping buffer ({buffer}) must not exceed max_length ({max_length})")
    start = max_length - buffer

    def shape(length: int) -> float:
        if length <= start:
            return 0.0
        return max(-1.0, (start - length) / buffer)

    return _length_reward(unit, shape, "overlong_shaping", per)
