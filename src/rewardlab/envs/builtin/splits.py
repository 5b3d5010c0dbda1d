"""What every built-in environment shares: hash-disjoint splits and checked generation arguments."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from rewardlab.envs.dataset import load_examples
from rewardlab.errors import RewardlabError
from rewardlab.types import Example

T = TypeVar("T")


def held_out(key: str, eval_fraction: float) -> bool:
    """Whether the example ``key`` names belongs to the held-out split.

    A hash, not a draw: the split of a problem is the same whatever the seed or the number of examples
    asked for, so no seed can ever leak a held-out problem into training.
    """
    bucket = int(hashlib.sha1(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return bucket < eval_fraction


def checked_levels(level: int | list[int], known: Iterable[int]) -> list[int]:
    """``level`` as a list (an int or a mix), every one of them a known level; else a one-line error."""
    known = list(known)
    levels = [level] if isinstance(level, int) else list(level)
    unknown = [lv for lv in levels if lv not in known]
    if not levels or unknown:
        raise ValueError(
            f"unknown level {unknown[0] if unknown else '[]'} (levels: {', '.join(map(str, known))})"
        )
    return levels


def check_split_sizes(num_train: int | None, num_eval: int | None, eval_fraction: float) -> None:
    """Example counts (``None``: all there are) and the held-out fraction, or a one-line error."""
    for name, value in (("num_train", num_train), ("num_eval", num_eval)):
        if value is not None and value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    if not 0.0 < eval_fraction < 1.0:
        raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")


FRESH_SEED_OFFSET = 10_000  # fresh draws never reuse the seeds the splits were generated with
ADVERSARIAL_SEED_OFFSET = 20_000


class Procedural:
    """Mixed into a built-in environment that generates its examples: its levels, its held-out fraction,
    and fresh held-out-side examples on demand. ``generate_rows(levels, n, split, seed, eval_fraction)``
    is the environment's generator."""

    generate_rows: Callable[..., list[dict[str, Any]]]

    def __init__(self, levels: list[int], eval_fraction: float, **kwargs: Any):
        super().__init__(**kwargs)
        self.levels = levels
        self.eval_fraction = eval_fraction

    def fresh_candidates(self, n: int, seed: int) -> list[Example]:
        """``n`` held-out-side examples drawn with another seed (the first ``n`` of any longer draw)."""
        rows = self.generate_rows(self.levels, n, "eval", seed + FRESH_SEED_OFFSET, self.eval_fraction)
        return load_examples(rows, self.system_prompt)

    def fresh_examples(self, n: int, seed: int) -> list[Example]:
        """``n`` fresh examples, none of them one of the held-out split's: a fresh set is disjoint from the
        held-out set as well as from train (the hash split sees to that)."""
        from rewardlab.runs.overlap import content_hash

        held = {content_hash(e.prompt, e.answer) for e in self.eval_examples}
        try:  # at most every held-out example is drawn again: this many always leave n, if they exist
            candidates = self.fresh_candidates(n + len(held), seed)
        except RewardlabError:  # the held-out side has fewer examples than that; draws are prefix-stable
            candidates = self.fresh_candidates(n, seed)
        fresh = [e for e in candidates if content_hash(e.prompt, e.answer) not in held]
        if len(fresh) < n:
            raise RewardlabError(
                f"fewer than {n} fresh examples exist beside the {len(held)} held-out ones at levels "
                f"{self.levels}; ask for fewer, or add a level"
            )
        return fresh[:n]


def split_draws(
    count: int,
    levels: list[int],
    split: str,
    eval_fraction: float,
    draw: Callable[[int], tuple[str, T]],
    what: str,
    hash_prefix: str = "",
) -> Iterator[tuple[int, T]]:
    """``(level, drawn)`` for ``count`` distinct draws on ``split``'s side of the hash split, levels in turn.

    ``draw(level)`` returns the example's text (what is deduplicated and hashed, after ``hash_prefix``) and
    whatever the caller builds its row from. Too few distinct draws is a one-line error naming ``what``.
    """
    seen: set[str] = set()
    attempts = 0
    while len(seen) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise RewardlabError(f"only {len(seen)} distinct {split} {what} found for levels {levels}")
        level = levels[len(seen) % len(levels)]
        key, drawn = draw(level)
        if key in seen or held_out(hash_prefix + key, eval_fraction) != (split == "eval"):
            continue
        seen.add(key)
        yield level, drawn
